"""bertkeras ML library: text encoders, model, tasks, checkpoints, training loop."""
