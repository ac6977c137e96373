# Empty dependencies file for init_fail.
# This may be replaced when dependencies are built.
