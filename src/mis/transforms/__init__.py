"""Pure tensor transforms shared by pipelines and networks (no file I/O, no device choice)."""
