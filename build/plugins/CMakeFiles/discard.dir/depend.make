# Empty dependencies file for discard.
# This may be replaced when dependencies are built.
