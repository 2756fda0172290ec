"""The train/infer platform shared by every task: run context, checkpoints, logging, measurement (timers, accuracy, predictions, tables), profiling."""
