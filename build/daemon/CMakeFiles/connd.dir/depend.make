# Empty dependencies file for connd.
# This may be replaced when dependencies are built.
