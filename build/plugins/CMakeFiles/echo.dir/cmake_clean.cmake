file(REMOVE_RECURSE
  "CMakeFiles/echo.dir/echo/echo.c.o"
  "CMakeFiles/echo.dir/echo/echo.c.o.d"
  "echo.pdb"
  "echo.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/echo.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
