"""mis: six deep-learning pipelines behind one CLI and one runtime. Importing mis imports no torch."""
__version__ = "0.1.0"
