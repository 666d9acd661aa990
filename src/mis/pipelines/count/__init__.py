"""Crowd counting: head-point density targets, synthetic crowd scenes, M-SFANet / M-SegNet."""
