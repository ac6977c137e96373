# Empty dependencies file for connd_harness.
# This may be replaced when dependencies are built.
