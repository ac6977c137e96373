# Empty dependencies file for connd_core.
# This may be replaced when dependencies are built.
