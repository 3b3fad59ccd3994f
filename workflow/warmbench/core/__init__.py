"""Shared code: configuration, files, LLM backends and caches, statistics, locks and the job runner.

Core imports no stage and no tool (tests/test_layers.py), so editing a stage reruns that stage only.
"""
