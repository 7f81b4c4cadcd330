"""Datasets, partitions, streams and buffers."""
