"""Experiment protocols of the chapters: each function trains (or loads) models through
cached runs and returns tidy DataFrames for the chapter's tables and figures."""
