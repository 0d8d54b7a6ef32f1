# `cmake --install <build> --prefix P` installs:
#   bin/samplerd, bin/samplerctl
#   include/samplerd/samplerd_client.h, include/samplerd/synthetic_model.h, include/samplerd/shm_plane.h, include/samplerd/v1/*.pb.h
#   lib/libsamplerd_{client,proto,profile_proto,health_proto}.a
#   lib/cmake/samplerd/  find_package(samplerd CONFIG REQUIRED) -> samplerd::client
#   lib/pkgconfig/samplerd.pc  (pkg-config --cflags --libs samplerd)
# A consumer includes "samplerd/samplerd_client.h"; tests/clients/consumer is one, built by scripts/test-clients.sh.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SAMPLERD_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/samplerd")

install(TARGETS samplerd samplerctl RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

set_target_properties(samplerd_client PROPERTIES EXPORT_NAME client)
set_target_properties(samplerd_proto PROPERTIES EXPORT_NAME proto)
set_target_properties(samplerd_profile_proto PROPERTIES EXPORT_NAME profile_proto)
set_target_properties(samplerd_health_proto PROPERTIES EXPORT_NAME health_proto)
foreach(_lib samplerd_client samplerd_proto samplerd_profile_proto)
  target_include_directories(${_lib} INTERFACE "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
endforeach()
install(TARGETS samplerd_client samplerd_proto samplerd_profile_proto samplerd_health_proto
  EXPORT samplerdTargets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(FILES "${PROJECT_SOURCE_DIR}/clients/cpp/samplerd_client.h" "${PROJECT_SOURCE_DIR}/clients/cpp/synthetic_model.h"
  "${PROJECT_SOURCE_DIR}/clients/cpp/shm_plane.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/samplerd")
install(FILES
  "${PROJECT_BINARY_DIR}/proto/gen/samplerd/v1/sampler.pb.h"
  "${PROJECT_BINARY_DIR}/proto/gen/samplerd/v1/sampler.grpc.pb.h"
  "${PROJECT_BINARY_DIR}/proto/gen/samplerd/v1/profile.pb.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/samplerd/v1")
install(FILES "${PROJECT_SOURCE_DIR}/proto/samplerd/v1/sampler.proto" "${PROJECT_SOURCE_DIR}/proto/samplerd/v1/profile.proto"
  DESTINATION "${CMAKE_INSTALL_DATADIR}/samplerd/proto/samplerd/v1")

install(EXPORT samplerdTargets NAMESPACE samplerd:: DESTINATION "${SAMPLERD_INSTALL_CMAKEDIR}")
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/samplerdConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/samplerdConfig.cmake" INSTALL_DESTINATION "${SAMPLERD_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/samplerdConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/samplerdConfig.cmake" "${PROJECT_BINARY_DIR}/samplerdConfigVersion.cmake"
  DESTINATION "${SAMPLERD_INSTALL_CMAKEDIR}")

# Relocatable: the paths are relative to the .pc file, so `--prefix P` at install time is honoured.
file(RELATIVE_PATH SAMPLERD_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file("${CMAKE_CURRENT_LIST_DIR}/samplerd.pc.in" "${PROJECT_BINARY_DIR}/samplerd.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/samplerd.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
