"""Running experiments: build objects from a config, run, checkpoint, launch, sweep, compare."""
