"""Records and what is made of them: summaries, tables, plots, HTML, TensorBoard."""
