{
  "targets": [
    {
      "target_name": "id_shift",
      "sources": ["native/id_shift.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
