# Empty dependencies file for echo.
# This may be replaced when dependencies are built.
