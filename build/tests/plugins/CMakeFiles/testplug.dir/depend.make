# Empty dependencies file for testplug.
# This may be replaced when dependencies are built.
