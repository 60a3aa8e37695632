// Dense float matrices, row-major: a batch is (rows = samples) x (columns =
// features), as in Keras, so a sample is a contiguous row.
#pragma once

#include <Eigen/Core>

namespace holdfast {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using RowVectorMap = Eigen::Map<Eigen::RowVectorXf>;

}  // namespace holdfast
