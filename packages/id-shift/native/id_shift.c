/*
 * The per-directory hot loops of the id-shift walkers: one JS->native crossing per directory
 * instead of one per syscall (each koffi call cost 0.5-2 us on top of a 1-2.5 us syscall here).
 * Policy (overflow checks, hard links, ACL value shifting, work sharing) stays in JS; this file
 * only reads and writes what the kernel has.
 *
 * Context-aware (NAPI_MODULE_INIT, no global state but one thread-local flag), so every walker
 * thread loads it. Names are bytes; nothing here assumes UTF-8.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define META_FIELDS 10 /* name start, name length, uid, gid, mode, nlink, ino lo, ino hi, dev major, dev minor */
#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"
/* listxattrat: the same number on every architecture but alpha (syscalls added since 5.1). */
#define SYS_LISTXATTRAT_NR 465
#define XATTR_MAX 65536 /* XATTR_LIST_MAX and XATTR_SIZE_MAX */

static __thread int listxattrat_missing;

/* A failure to report: which call, errno, and the entry's name ("" for the directory itself). */
struct failure {
  const char *call;
  int err;
  const char *name;
};

struct growable {
  char *data;
  size_t used, cap;
};

static int reserve(struct growable *g, size_t more) {
  if (g->used + more <= g->cap) return 0;
  size_t cap = g->cap ? g->cap : 4096;
  while (cap < g->used + more) cap *= 2;
  char *p = realloc(g->data, cap);
  if (!p) return -1;
  g->data = p;
  g->cap = cap;
  return 0;
}

static int append(struct growable *g, const void *src, size_t n) {
  if (reserve(g, n)) return -1;
  memcpy(g->data + g->used, src, n);
  g->used += n;
  return 0;
}

/* dir + "/" + name into out (PATH_MAX); "." names the directory itself, "" as dir means name is a path. */
static int join_path(char *out, const char *dir, const char *name) {
  int n = dir[0] == 0 || strcmp(name, ".") == 0 ? snprintf(out, 4096, "%s", dir[0] ? dir : name)
          : strcmp(dir, "/") == 0 ? snprintf(out, 4096, "/%s", name)
                                  : snprintf(out, 4096, "%s/%s", dir, name);
  return n < 0 || n >= 4096 ? -ENAMETOOLONG : 0;
}

static int listed(const char *list, ssize_t len, const char *attr) {
  for (ssize_t at = 0; at < len; at += (ssize_t)strlen(list + at) + 1) {
    if (strcmp(list + at, attr) == 0) return 1;
  }
  return 0;
}

#define CHECK(call)                                                          \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      napi_throw_error(env, NULL, "id_shift: N-API call failed: " #call);    \
      goto done;                                                             \
    }                                                                        \
  } while (0)

static napi_status get_bytes(napi_env env, napi_value v, char **data, size_t *len) {
  return napi_get_buffer_info(env, v, (void **)data, len);
}

static napi_status buffer_copy(napi_env env, const void *src, size_t n, napi_value *out) {
  return napi_create_buffer_copy(env, n, src, NULL, out);
}

/*
 * The kernel allocates a buffer of the size a listxattr or getxattr asks for (kvmalloc: 64 KiB
 * comes from the page allocator, which was a third of a listxattr's cost on tmpfs), so the first
 * call asks for a small one and only a value that does not fit costs a size query and a retry.
 */
#define XATTR_FIRST_TRY 512

struct xattr_target {
  int dirfd;
  const char *name;
  const char *path; /* dir/name, for the calls that take a path */
  const char *attr; /* the attribute to read, for getxattr */
};

typedef ssize_t (*xattr_call)(const struct xattr_target *t, char *buf, size_t size);

static ssize_t small_buffer_first(xattr_call call, const struct xattr_target *t, char *buf) {
  ssize_t n = call(t, buf, XATTR_FIRST_TRY);
  while (n < 0 && errno == ERANGE) {
    ssize_t needed = call(t, NULL, 0);
    if (needed <= 0) return needed;
    n = call(t, buf, needed < XATTR_MAX ? (size_t)needed : XATTR_MAX);
  }
  return n;
}

static ssize_t list_names_at(const struct xattr_target *t, char *buf, size_t size) {
  return syscall(SYS_LISTXATTRAT_NR, t->dirfd, t->name, AT_SYMLINK_NOFOLLOW, buf, size);
}

static ssize_t list_names_by_path(const struct xattr_target *t, char *buf, size_t size) {
  return llistxattr(t->path, buf, size);
}

static ssize_t get_value_by_path(const struct xattr_target *t, char *buf, size_t size) {
  return lgetxattr(t->path, t->attr, buf, size);
}

/* Reads one ACL xattr of path into an acl slot: buffer, null (none), or a failure. */
static int read_acl(napi_env env, const char *path, const char *attr, char *value, napi_value *out) {
  struct xattr_target target = {.dirfd = -1, .name = NULL, .path = path, .attr = attr};
  ssize_t n = small_buffer_first(get_value_by_path, &target, value);
  if (n == -1 && (errno == ENODATA || errno == ENOENT)) return napi_get_null(env, out) == napi_ok ? 0 : -1;
  if (n < 0) return errno;
  return buffer_copy(env, value, (size_t)n, out) == napi_ok ? 0 : -1;
}

/*
 * scanDir(dir: Buffer (NUL-terminated path), only: Buffer | null, rootDevMajor, rootDevMinor,
 *         crossMounts: bool, acls: bool)
 *   -> [count, meta: Uint32Array, names: Buffer, acls: [index, access|null, default|null][] | null,
 *       failure: [call, errno, name: Buffer] | null]
 *
 * Opens the directory (O_NOFOLLOW), reads it with getdents64 (or takes just `only`, the root
 * entry, which is never treated as a mount point), statx's every entry once without following
 * symlinks, skips entries on another filesystem unless crossMounts, and, when acls, lists the
 * xattrs of every non-symlink and reads the POSIX ACLs listed. A directory that vanished or became
 * a non-directory/symlink gives count 0 and no failure. Names are NUL-terminated in `names`.
 */
static napi_value scan_dir(napi_env env, napi_callback_info info) {
  napi_value argv[6], result = NULL, acl_list = NULL;
  size_t argc = 6;
  char *dir, *only = NULL;
  size_t dir_len, only_len;
  uint32_t root_major, root_minor;
  bool cross_mounts, want_acls;
  struct growable meta = {0}, names = {0};
  struct failure fail = {0};
  char *dents = NULL, *xlist = NULL, *xvalue = NULL;
  uint32_t count = 0, acl_count = 0;
  unsigned nox_major = UINT32_MAX, nox_minor = UINT32_MAX;
  napi_valuetype only_type;
  int fd = -1;

  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(get_bytes(env, argv[0], &dir, &dir_len));
  CHECK(napi_typeof(env, argv[1], &only_type));
  if (only_type != napi_null) CHECK(get_bytes(env, argv[1], &only, &only_len));
  CHECK(napi_get_value_uint32(env, argv[2], &root_major));
  CHECK(napi_get_value_uint32(env, argv[3], &root_minor));
  CHECK(napi_get_value_bool(env, argv[4], &cross_mounts));
  CHECK(napi_get_value_bool(env, argv[5], &want_acls));

  fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP) fail = (struct failure){"open", errno, ""};
    goto build;
  }
  dents = malloc(65536);
  xlist = malloc(XATTR_MAX);
  xvalue = malloc(XATTR_MAX);
  if (!dents || !xlist || !xvalue) {
    fail = (struct failure){"malloc", ENOMEM, ""};
    goto build;
  }
  if (want_acls) CHECK(napi_create_array(env, &acl_list));

  for (;;) {
    long n;
    if (only) {
      n = 1; /* one pass over the single name below */
    } else {
      n = syscall(SYS_getdents64, fd, dents, 65536);
      if (n < 0) {
        fail = (struct failure){"getdents64", errno, ""};
        break;
      }
      if (n == 0) break;
    }
    for (long at = 0; at < n;) {
      const char *name;
      if (only) {
        name = only;
        at = n;
      } else {
        unsigned short reclen;
        memcpy(&reclen, dents + at + 16, sizeof reclen);
        name = dents + at + 19;
        at += reclen;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
      }
      struct statx st;
      if (statx(fd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &st) < 0) {
        if (errno == ENOENT) continue;
        fail = (struct failure){"statx", errno, name};
        goto build;
      }
      /* A mount point (directory or file) belongs to the other filesystem. */
      if (!only && !cross_mounts && (st.stx_dev_major != root_major || st.stx_dev_minor != root_minor)) continue;
      size_t name_len = strlen(name);
      uint32_t row[META_FIELDS] = {
          (uint32_t)names.used, (uint32_t)name_len, st.stx_uid, st.stx_gid, st.stx_mode, st.stx_nlink,
          (uint32_t)st.stx_ino, (uint32_t)(st.stx_ino >> 32), st.stx_dev_major, st.stx_dev_minor,
      };
      if (append(&names, name, name_len + 1) || append(&meta, row, sizeof row)) {
        fail = (struct failure){"malloc", ENOMEM, name};
        goto build;
      }
      uint32_t index = count++;
      if (!want_acls || S_ISLNK(st.stx_mode)) continue;
      if (st.stx_dev_major == nox_major && st.stx_dev_minor == nox_minor) continue;

      /* listxattrat takes the directory fd: the path is built only for the calls that take one. */
      char path[4096];
      struct xattr_target target = {.dirfd = fd, .name = name, .path = path, .attr = NULL};
      ssize_t listed_len = -1;
      if (!listxattrat_missing) {
        listed_len = small_buffer_first(list_names_at, &target, xlist);
        if (listed_len < 0 && errno == ENOSYS) listxattrat_missing = 1;
      }
      if (listxattrat_missing) {
        int path_err = join_path(path, dir, name);
        if (path_err) {
          fail = (struct failure){"listxattr", -path_err, name};
          goto build;
        }
        listed_len = small_buffer_first(list_names_by_path, &target, xlist);
      }
      if (listed_len < 0) {
        if (errno == EOPNOTSUPP) {
          nox_major = st.stx_dev_major;
          nox_minor = st.stx_dev_minor;
          continue;
        }
        if (errno == ENOENT) continue;
        fail = (struct failure){"listxattr", errno, name};
        goto build;
      }
      int has_access = listed(xlist, listed_len, ACL_ACCESS);
      int has_default = S_ISDIR(st.stx_mode) && listed(xlist, listed_len, ACL_DEFAULT);
      if (!has_access && !has_default) continue;
      int path_err = join_path(path, dir, name);
      if (path_err) {
        fail = (struct failure){"lgetxattr", -path_err, name};
        goto build;
      }
      napi_value entry, slot;
      CHECK(napi_create_array_with_length(env, 3, &entry));
      CHECK(napi_create_uint32(env, index, &slot));
      CHECK(napi_set_element(env, entry, 0, slot));
      const char *attrs[2] = {has_access ? ACL_ACCESS : NULL, has_default ? ACL_DEFAULT : NULL};
      for (int k = 0; k < 2; k++) {
        if (!attrs[k]) {
          CHECK(napi_get_null(env, &slot));
        } else {
          int r = read_acl(env, path, attrs[k], xvalue, &slot);
          if (r < 0) CHECK(napi_generic_failure);
          if (r > 0) {
            fail = (struct failure){"lgetxattr", r, name};
            goto build;
          }
        }
        CHECK(napi_set_element(env, entry, (uint32_t)k + 1, slot));
      }
      CHECK(napi_set_element(env, acl_list, acl_count++, entry));
    }
    if (only) break;
  }

build: {
  napi_value items[5], meta_ab;
  void *meta_data;
  CHECK(napi_create_uint32(env, count, &items[0]));
  CHECK(napi_create_arraybuffer(env, meta.used, &meta_data, &meta_ab));
  if (meta.used) memcpy(meta_data, meta.data, meta.used);
  CHECK(napi_create_typedarray(env, napi_uint32_array, meta.used / 4, meta_ab, 0, &items[1]));
  CHECK(buffer_copy(env, names.data ? names.data : "", names.used, &items[2]));
  if (acl_count) items[3] = acl_list;
  else CHECK(napi_get_null(env, &items[3]));
  if (fail.call) {
    napi_value f[3];
    CHECK(napi_create_array_with_length(env, 3, &items[4]));
    CHECK(napi_create_string_utf8(env, fail.call, NAPI_AUTO_LENGTH, &f[0]));
    CHECK(napi_create_int32(env, fail.err, &f[1]));
    CHECK(buffer_copy(env, fail.name, strlen(fail.name), &f[2]));
    for (uint32_t k = 0; k < 3; k++) CHECK(napi_set_element(env, items[4], k, f[k]));
  } else {
    CHECK(napi_get_null(env, &items[4]));
  }
  CHECK(napi_create_array_with_length(env, 5, &result));
  for (uint32_t k = 0; k < 5; k++) CHECK(napi_set_element(env, result, k, items[k]));
}

done:
  if (fd >= 0) close(fd);
  free(dents);
  free(xlist);
  free(xvalue);
  free(meta.data);
  free(names.data);
  return result;
}

static int set_acl(const char *dir, const char *name, const char *attr, napi_env env, napi_value value) {
  char path[4096], *data;
  size_t len;
  if (get_bytes(env, value, &data, &len) != napi_ok) return EINVAL;
  int err = join_path(path, dir, name);
  if (err) return -err;
  if (lsetxattr(path, attr, data, len, 0) < 0 && errno != ENOENT) return errno;
  return 0;
}

/*
 * applyDir(dir: Buffer (NUL-terminated path) | null (names are absolute paths), names: Buffer,
 *          nameStarts, uids, gids, modes: Uint32Array, from, to, uidOffset, gidOffset,
 *          acls: [index, access|null, default|null][] | null (sorted by index))
 *   -> null, or [call, errno, index] for the first failure
 *
 * For entries from..to-1: fchownat(AT_SYMLINK_NOFOLLOW) to (uid + uidOffset, gid + gidOffset),
 * then the ACL values given, then fchmodat back to the scanned mode when it is a regular file with
 * setuid/setgid bits (chown clears them). Entries that vanished (ENOENT) are skipped; a directory
 * that vanished or was replaced since the scan leaves nothing to do.
 */
static napi_value apply_dir(napi_env env, napi_callback_info info) {
  napi_value argv[11], result = NULL;
  size_t argc = 11;
  char *dir = NULL, *names;
  size_t names_len, dir_len;
  uint32_t *starts, *uids, *gids, *modes;
  size_t len;
  uint32_t from, to, acl_len = 0, acl_at = 0, acl_index = UINT32_MAX;
  int64_t uid_offset, gid_offset;
  napi_valuetype t;
  napi_value acl_entry = NULL;
  int fd = AT_FDCWD, owned_fd = 0;
  struct failure fail = {0};
  uint32_t fail_index = 0;

  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_typeof(env, argv[0], &t));
  if (t != napi_null) CHECK(get_bytes(env, argv[0], &dir, &dir_len));
  CHECK(get_bytes(env, argv[1], &names, &names_len));
  napi_typedarray_type tt;
  napi_value ab;
  size_t off;
  CHECK(napi_get_typedarray_info(env, argv[2], &tt, &len, (void **)&starts, &ab, &off));
  CHECK(napi_get_typedarray_info(env, argv[3], &tt, &len, (void **)&uids, &ab, &off));
  CHECK(napi_get_typedarray_info(env, argv[4], &tt, &len, (void **)&gids, &ab, &off));
  CHECK(napi_get_typedarray_info(env, argv[5], &tt, &len, (void **)&modes, &ab, &off));
  CHECK(napi_get_value_uint32(env, argv[6], &from));
  CHECK(napi_get_value_uint32(env, argv[7], &to));
  CHECK(napi_get_value_int64(env, argv[8], &uid_offset));
  CHECK(napi_get_value_int64(env, argv[9], &gid_offset));
  CHECK(napi_typeof(env, argv[10], &t));
  if (t != napi_null) CHECK(napi_get_array_length(env, argv[10], &acl_len));
  if (to > len) {
    napi_throw_range_error(env, NULL, "applyDir: range past the arrays");
    goto done;
  }

  if (dir) {
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP) fail = (struct failure){"open", errno, ""};
      goto build;
    }
    owned_fd = 1;
  }

  for (uint32_t i = from; i < to; i++) {
    const char *name = names + starts[i];
    if (starts[i] >= names_len) {
      napi_throw_range_error(env, NULL, "applyDir: name start past the names buffer");
      goto done;
    }
    while (acl_at < acl_len && (acl_index == UINT32_MAX || acl_index < i)) {
      napi_value idx;
      CHECK(napi_get_element(env, argv[10], acl_at++, &acl_entry));
      CHECK(napi_get_element(env, acl_entry, 0, &idx));
      CHECK(napi_get_value_uint32(env, idx, &acl_index));
    }
    int64_t uid = (int64_t)uids[i] + uid_offset, gid = (int64_t)gids[i] + gid_offset;
    if (fchownat(fd, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;
      fail = (struct failure){"fchownat", errno, name};
      fail_index = i;
      goto build;
    }
    if (acl_index == i) {
      const char *attrs[2] = {ACL_ACCESS, ACL_DEFAULT};
      for (uint32_t k = 0; k < 2; k++) {
        napi_value value;
        CHECK(napi_get_element(env, acl_entry, k + 1, &value));
        CHECK(napi_typeof(env, value, &t));
        if (t == napi_null || t == napi_undefined) continue;
        int err = set_acl(dir ? dir : "", name, attrs[k], env, value);
        if (err) {
          fail = (struct failure){"lsetxattr", err < 0 ? -err : err, name};
          fail_index = i;
          goto build;
        }
      }
    }
    uint32_t mode = modes[i];
    if (S_ISREG(mode) && (mode & (S_ISUID | S_ISGID))) {
      if (fchmodat(fd, name, mode & 07777, 0) < 0 && errno != ENOENT) {
        fail = (struct failure){"fchmodat", errno, name};
        fail_index = i;
        goto build;
      }
    }
  }

build:
  if (fail.call) {
    napi_value f[3];
    CHECK(napi_create_array_with_length(env, 3, &result));
    CHECK(napi_create_string_utf8(env, fail.call, NAPI_AUTO_LENGTH, &f[0]));
    CHECK(napi_create_int32(env, fail.err, &f[1]));
    CHECK(napi_create_int64(env, fail.name[0] ? (int64_t)fail_index : -1, &f[2]));
    for (uint32_t k = 0; k < 3; k++) CHECK(napi_set_element(env, result, k, f[k]));
  } else {
    CHECK(napi_get_null(env, &result));
  }

done:
  if (owned_fd) close(fd);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "scanDir", NAPI_AUTO_LENGTH, scan_dir, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "scanDir", fn) != napi_ok ||
      napi_create_function(env, "applyDir", NAPI_AUTO_LENGTH, apply_dir, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "applyDir", fn) != napi_ok) {
    return NULL;
  }
  return exports;
}
