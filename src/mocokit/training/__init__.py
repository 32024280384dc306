"""The training toolkit shared by pretraining (`mocokit.engine`) and evaluation (`mocokit.evaluation`): the run's
config, optimisers, schedules, checkpoints and run folders, device and precision, the run lock, interrupts, fault
points, seeded sampling, process-wide settings and distributed launch."""
