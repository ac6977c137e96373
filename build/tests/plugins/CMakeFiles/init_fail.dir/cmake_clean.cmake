file(REMOVE_RECURSE
  "CMakeFiles/init_fail.dir/init_fail.c.o"
  "CMakeFiles/init_fail.dir/init_fail.c.o.d"
  "init_fail.pdb"
  "init_fail.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/init_fail.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
