file(REMOVE_RECURSE
  "CMakeFiles/bad_abi.dir/bad_abi.c.o"
  "CMakeFiles/bad_abi.dir/bad_abi.c.o.d"
  "bad_abi.pdb"
  "bad_abi.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/bad_abi.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
