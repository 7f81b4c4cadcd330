"""The paper's experiments: its numbers as data, the runs that measure ours, the rows beside."""
