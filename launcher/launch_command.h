// `holdfast launch`: runs a training program on N ranks under mpirun with a
// restart policy and signal forwarding that leave the ranks time to save.
//
//   holdfast launch -np 4 --max-restarts 5 -- build/examples/fmnist_mlp --backup-dir ck
//
// * Signals. SIGTERM, SIGINT and SIGUSR1 to the launcher become one SIGUSR1
//   to mpirun, which forwards it to every rank: holdfast programs take it as
//   "commit a checkpoint at the next agreed step and exit 75" (a TERM to
//   mpirun would make it kill the ranks within a second or two). Only after
//   --grace seconds does the launcher send TERM, then KILL, to what is left.
//   mpirun runs in its own process group so that a Ctrl-C at the terminal
//   reaches the launcher alone.
// * Restarts. Exit 0 ends the launcher (0); exit 2 (usage, bad input, a
//   checkpoint of another model) ends it at once (2). Exit 75 (preempted)
//   and failures (a dead or hung rank, exit 1, a signal) restart the whole
//   job after --restart-delay seconds, up to --max-restarts times; then the
//   launcher exits with the last code. A job stopped because the launcher
//   itself was signalled is not restarted here: the launcher exits with its
//   code (75) so that the scheduler (a SLURM batch script) requeues it.
// * Reporting. One line per attempt on stderr: attempt, duration, exit
//   cause, and the step the attempt resumed from (HOLDFAST_RESTORE_REPORT,
//   written by CheckpointManager::RestoreLatest on the chief).
// * Several hosts. --hostfile F passes F to mpirun with TCP keepalive on
//   Open MPI's daemon links, so that a host that dies or is cut off ends the
//   attempt within ~15 s (not a silent hang); the site's own settings (launch
//   agent, interfaces) come from OMPI_MCA_* as usual. --min-np M probes every
//   host before each attempt (the launch agent runs `true` there) and runs
//   min(-np, slots of the hosts that answered) ranks on them, or gives up
//   when that is below M: a lost host costs one restart on a smaller world,
//   and a host that comes back is used again at the next attempt.
// * SLURM. Inside an allocation mpirun places the ranks on its nodes (and
//   starts its daemons there through srun); on several nodes the launcher
//   adds the same keepalive settings as for --hostfile, and --min-np without
//   --hostfile probes the allocation's nodes with a one-task job step each.
#pragma once

namespace CLI {
class App;
}  // namespace CLI

namespace holdfast::launcher {

// Adds the `launch` subcommand to `app`; when it runs (inside app.parse) it
// supervises the job and stores the final exit code in *exit_code.
void AddLaunchCommand(CLI::App& app, int* exit_code);

}  // namespace holdfast::launcher
