/*
 * Host syscalls Node has no binding for, one small function each; policy stays in TypeScript.
 *
 *   idmapMount(path, usernsFd)             open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP)
 *                                          + move_mount onto the same path (sysbox-libs idMap.IDMapMount)
 *   mount(source, target, fstype, flags, data) / umount(target, flags)
 *   mountAsync(...) / umountAsync(...)     the same on a libuv pool thread, answered by a promise
 *   notify(socketPath, message)            one datagram on an AF_UNIX SOCK_DGRAM socket (sd_notify);
 *                                          a path starting with '@' is an abstract socket
 *   bindDatagram(path) -> fd               a non-blocking datagram socket bound to path, SO_PASSCRED on
 *   receive(fd) -> [message, pid] | null   one datagram and its sender's pid, null when none is queued
 *   close(fd)
 *
 * Errors are thrown as Error objects with `code` (the errno name, e.g. "EINVAL"), `errno` and
 * `syscall`, like Node's own. The mount API calls go through syscall(2) with their numbers (the same
 * on every architecture but alpha), so the addon builds and runs with glibc < 2.36 and old kernel
 * headers: the prebuilt binary needs only glibc >= 2.28. No global state: context-aware.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#define HN_OPEN_TREE_CLONE 1
#define HN_OPEN_TREE_CLOEXEC O_CLOEXEC
#define HN_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define HN_MOUNT_ATTR_IDMAP 0x00100000
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* struct mount_attr of linux/mount.h (MOUNT_ATTR_SIZE_VER0), spelled here for old headers. */
struct hn_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

#define MAX_ARG 4096

static const char *errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOTSOCK: return "ENOTSOCK";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EAGAIN: return "EAGAIN";
    case ENODEV: return "ENODEV";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EMSGSIZE: return "EMSGSIZE";
    case EADDRINUSE: return "EADDRINUSE";
    case ELOOP: return "ELOOP";
    case EROFS: return "EROFS";
    case EXDEV: return "EXDEV";
    case ENOMEM: return "ENOMEM";
    default: return "EUNKNOWN";
  }
}

/* An Error `<syscall> <what>: <strerror>` with code (errno name), errno and syscall set. */
static napi_value errno_error(napi_env env, const char *call, const char *what, int err) {
  char msg[3 * MAX_ARG + 512];
  snprintf(msg, sizeof msg, "%s %s: %s (%s)", call, what, strerror(err), errno_name(err));
  napi_value m, code, e, num, sc;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, m, &e);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, e, "errno", num);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, e, "syscall", sc);
  return e;
}

/* Throws errno_error(...); returns NULL for N-API. */
static napi_value throw_errno(napi_env env, const char *call, const char *what, int err) {
  napi_throw(env, errno_error(env, call, what, err));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

/* argv[i] as a NUL-terminated string into buf; 0 on success, -1 with a TypeError thrown. */
static int get_string(napi_env env, napi_value v, char *buf, size_t cap, const char *name) {
  size_t len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", name);
    throw_type(env, msg);
    return -1;
  }
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok || len + 1 >= cap) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s is too long", name);
    throw_type(env, msg);
    return -1;
  }
  return 0;
}

static int get_int(napi_env env, napi_value v, int32_t *out, const char *name) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", name);
    throw_type(env, msg);
    return -1;
  }
  return 0;
}

#define ARGS(n)                                                              \
  size_t argc = n;                                                           \
  napi_value argv[n];                                                        \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL; \
  if (argc < n) return throw_type(env, "missing arguments")

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* idmapMount(path, usernsFd): path is replaced (stacked) by an ID-mapped clone of its mount tree. */
static napi_value idmap_mount(napi_env env, napi_callback_info info) {
  ARGS(2);
  char path[MAX_ARG];
  int32_t userns_fd;
  if (get_string(env, argv[0], path, sizeof path, "path") || get_int(env, argv[1], &userns_fd, "usernsFd")) return NULL;

  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, HN_OPEN_TREE_CLONE | HN_OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  if (tree < 0) return throw_errno(env, "open_tree(OPEN_TREE_CLONE)", path, errno);
  struct hn_mount_attr attr = {.attr_set = HN_MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd};
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
    int err = errno;
    close(tree);
    return throw_errno(env, "mount_setattr(MOUNT_ATTR_IDMAP)", path, err);
  }
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, path, HN_MOVE_MOUNT_F_EMPTY_PATH) < 0) {
    int err = errno;
    close(tree);
    return throw_errno(env, "move_mount", path, err);
  }
  close(tree);
  return undefined(env);
}

/* mount(source, target, fstype, flags, data) */
static napi_value do_mount(napi_env env, napi_callback_info info) {
  ARGS(5);
  char source[MAX_ARG], target[MAX_ARG], fstype[256], data[MAX_ARG];
  int32_t flags;
  if (get_string(env, argv[0], source, sizeof source, "source") || get_string(env, argv[1], target, sizeof target, "target") ||
      get_string(env, argv[2], fstype, sizeof fstype, "fstype") || get_int(env, argv[3], &flags, "flags") ||
      get_string(env, argv[4], data, sizeof data, "data")) {
    return NULL;
  }
  if (mount(source, target, fstype, (unsigned long)(uint32_t)flags, data[0] ? data : NULL) < 0) {
    char what[2 * MAX_ARG + 300];
    snprintf(what, sizeof what, "%s on %s (%s)", fstype, target, data);
    return throw_errno(env, "mount", what, errno);
  }
  return undefined(env);
}

/* umount(target, flags) */
static napi_value do_umount(napi_env env, napi_callback_info info) {
  ARGS(2);
  char target[MAX_ARG];
  int32_t flags;
  if (get_string(env, argv[0], target, sizeof target, "target") || get_int(env, argv[1], &flags, "flags")) return NULL;
  if (umount2(target, flags) < 0) return throw_errno(env, "umount2", target, errno);
  return undefined(env);
}

/*
 * mountAsync / umountAsync: the same syscalls on a libuv pool thread, answered by a promise. A
 * daemon mounting for many containers must not stop its event loop for a mount that hangs (an
 * unreachable lower); mount(8) in a child cost 8 ms a call (fork, exec, libmount), these ~25 us.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int is_mount;
  char source[MAX_ARG], target[MAX_ARG], fstype[256], data[MAX_ARG];
  unsigned long flags;
  int err;
} mount_job;

static void mount_job_execute(napi_env env, void *p) {
  (void)env;
  mount_job *job = p;
  int r = job->is_mount ? mount(job->source, job->target, job->fstype, job->flags, job->data[0] ? job->data : NULL)
                        : umount2(job->target, (int)job->flags);
  job->err = r < 0 ? errno : 0;
}

static void mount_job_complete(napi_env env, napi_status status, void *p) {
  mount_job *job = p;
  if (status != napi_ok) {
    napi_value m, e;
    napi_create_string_utf8(env, "mount job was cancelled", NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    napi_reject_deferred(env, job->deferred, e);
  } else if (job->err) {
    char what[2 * MAX_ARG + 300];
    if (job->is_mount) snprintf(what, sizeof what, "%s on %s (%s)", job->fstype, job->target, job->data);
    else snprintf(what, sizeof what, "%s", job->target);
    napi_reject_deferred(env, job->deferred, errno_error(env, job->is_mount ? "mount" : "umount2", what, job->err));
  } else {
    napi_resolve_deferred(env, job->deferred, undefined(env));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* Queues the job; returns its promise, or NULL with an error thrown (the job is freed). */
static napi_value queue_mount_job(napi_env env, mount_job *job) {
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, job->is_mount ? "mount" : "umount2", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, mount_job_execute, mount_job_complete, job, &job->work) != napi_ok) {
    free(job);
    return throw_type(env, "could not queue the mount job");
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job);
    return throw_type(env, "could not queue the mount job");
  }
  return promise;
}

/* mountAsync(source, target, fstype, flags, data) -> Promise<void> */
static napi_value mount_async(napi_env env, napi_callback_info info) {
  ARGS(5);
  mount_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, "calloc", "mount job", ENOMEM);
  int32_t flags;
  if (get_string(env, argv[0], job->source, sizeof job->source, "source") ||
      get_string(env, argv[1], job->target, sizeof job->target, "target") ||
      get_string(env, argv[2], job->fstype, sizeof job->fstype, "fstype") || get_int(env, argv[3], &flags, "flags") ||
      get_string(env, argv[4], job->data, sizeof job->data, "data")) {
    free(job);
    return NULL;
  }
  job->is_mount = 1;
  job->flags = (unsigned long)(uint32_t)flags;
  return queue_mount_job(env, job);
}

/* umountAsync(target, flags) -> Promise<void> */
static napi_value umount_async(napi_env env, napi_callback_info info) {
  ARGS(2);
  mount_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, "calloc", "umount job", ENOMEM);
  int32_t flags;
  if (get_string(env, argv[0], job->target, sizeof job->target, "target") || get_int(env, argv[1], &flags, "flags")) {
    free(job);
    return NULL;
  }
  job->flags = (unsigned long)(uint32_t)flags;
  return queue_mount_job(env, job);
}

/* A sockaddr_un for path; '@' first means the abstract namespace (sd_notify's convention). */
static int unix_addr(napi_env env, const char *path, struct sockaddr_un *sa, socklen_t *len) {
  size_t n = strlen(path);
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (n == 0 || (path[0] != '/' && path[0] != '@')) {
    throw_type(env, "socket path must be absolute or start with '@' (abstract)");
    return -1;
  }
  if (n >= sizeof sa->sun_path) {
    throw_errno(env, "socket", path, ENAMETOOLONG);
    return -1;
  }
  memcpy(sa->sun_path, path, n);
  if (path[0] == '@') {
    sa->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return 0;
}

/* notify(socketPath, message): one datagram, as sd_notify(3) sends it. */
static napi_value notify(napi_env env, napi_callback_info info) {
  ARGS(2);
  char path[MAX_ARG], msg[MAX_ARG];
  if (get_string(env, argv[0], path, sizeof path, "socketPath") || get_string(env, argv[1], msg, sizeof msg, "message")) return NULL;
  struct sockaddr_un sa;
  socklen_t len;
  if (unix_addr(env, path, &sa, &len)) return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", path, errno);
  ssize_t n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
  int err = errno;
  close(fd);
  if (n < 0) return throw_errno(env, "sendto", path, err);
  return undefined(env);
}

/* bindDatagram(path) -> fd: non-blocking, close-on-exec, SO_PASSCRED so receive() knows the sender. */
static napi_value bind_datagram(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[MAX_ARG];
  if (get_string(env, argv[0], path, sizeof path, "path")) return NULL;
  struct sockaddr_un sa;
  socklen_t len;
  if (unix_addr(env, path, &sa, &len)) return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", path, errno);
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind", path, err);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* receive(fd) -> [message, senderPid] or null when nothing is queued. */
static napi_value receive(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (get_int(env, argv[0], &fd, "fd")) return NULL;
  char buf[MAX_ARG];
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(struct ucred))];
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
  ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value nul;
      napi_get_null(env, &nul);
      return nul;
    }
    return throw_errno(env, "recvmsg", "notify socket", errno);
  }
  int32_t pid = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
      struct ucred cred;
      memcpy(&cred, CMSG_DATA(c), sizeof cred);
      pid = cred.pid;
    }
  }
  napi_value out, m, p;
  napi_create_array_with_length(env, 2, &out);
  napi_create_string_utf8(env, buf, (size_t)n, &m);
  napi_create_int32(env, pid, &p);
  napi_set_element(env, out, 0, m);
  napi_set_element(env, out, 1, p);
  return out;
}

static napi_value do_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (get_int(env, argv[0], &fd, "fd")) return NULL;
  if (close(fd) < 0) return throw_errno(env, "close", "fd", errno);
  return undefined(env);
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"idmapMount", idmap_mount}, {"mount", do_mount},     {"umount", do_umount},       {"mountAsync", mount_async},
      {"umountAsync", umount_async}, {"notify", notify}, {"bindDatagram", bind_datagram}, {"receive", receive},
      {"close", do_close},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, fn) != napi_ok) {
      return NULL;
    }
  }
  return exports;
}
