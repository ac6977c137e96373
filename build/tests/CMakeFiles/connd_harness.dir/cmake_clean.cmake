file(REMOVE_RECURSE
  "CMakeFiles/connd_harness.dir/harness.c.o"
  "CMakeFiles/connd_harness.dir/harness.c.o.d"
  "libconnd_harness.a"
  "libconnd_harness.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/connd_harness.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
