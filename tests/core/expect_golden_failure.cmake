# Runs each golden test binary (TEST_BINARIES) with SAMPLERD_GOLDEN_DIR pointing at a directory without
# cases.json and at one whose cases.json is not JSON, and fails unless every run exits non-zero and its output
# names the cases.json it could not use.
#
#   cmake -DWORK_DIR=/tmp/x -DTEST_BINARIES="a;b" -P expect_golden_failure.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/missing" "${WORK_DIR}/broken/inputs")
file(WRITE "${WORK_DIR}/broken/cases.json" "{\"cases\": [")

set(problems "")
foreach(dir missing broken)
  set(expected "${WORK_DIR}/${dir}/cases.json")
  foreach(binary IN LISTS TEST_BINARIES)
    execute_process(
      COMMAND "${CMAKE_COMMAND}" -E env "SAMPLERD_GOLDEN_DIR=${WORK_DIR}/${dir}" "${binary}"
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out TIMEOUT 120)
    get_filename_component(name "${binary}" NAME)
    if(rc EQUAL 0)
      string(APPEND problems "${name} passed with a ${dir} golden directory\n")
    endif()
    string(FIND "${out}" "${expected}" at)
    if(at EQUAL -1)
      string(APPEND problems "${name} with a ${dir} golden directory does not name ${expected}; its output:\n${out}\n")
    endif()
  endforeach()
endforeach()
if(problems)
  message(FATAL_ERROR "${problems}")
endif()
message(STATUS "every golden test binary fails naming the path for a missing and a broken golden directory")
