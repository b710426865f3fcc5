{
  "targets": [
    {
      "target_name": "host_native",
      "sources": ["native/host_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
