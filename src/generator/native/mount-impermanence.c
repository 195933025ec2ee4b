/*
 * mount.impermanence: the mount(8) helper behind the generator's `Type=impermanence` units. It
 * bind-mounts a persisted path from its storage by file descriptor, so that nobody can redirect
 * the mount with a symlink between the generator's check and the mount:
 *
 *   - the storage root is opened (an admin-declared path: symlinks in it are followed);
 *   - the source is opened relative to it with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS):
 *     a symlink anywhere below the storage root, the last component included, is refused;
 *   - the mount point is opened from "/" with RESOLVE_NO_SYMLINKS: a symlink in it is refused;
 *   - both must be of the declared kind (a directory, or a regular file for a file entry);
 *   - the source is cloned with open_tree(OPEN_TREE_CLONE) (a bind mount, not recursive), the
 *     mount options applied to the clone with mount_setattr, and the clone attached to the mount
 *     point's descriptor with move_mount: nothing is looked up by path after the checks.
 *     The mount is on the folder that was opened, whatever its name: a user who renames it (a
 *     rename begun before the mount may even end after it) moves it, never onto another folder.
 *
 * mount(8) runs it as /sbin/mount.impermanence SOURCE TARGET [-sfnvw] [-N NS] [-o OPTIONS] [-t TYPE].
 * mount(8) has already resolved symlinks in SOURCE and TARGET (it canonicalizes both) and keeps
 * x-* options from helpers, so the unit passes the paths as written, through its environment:
 *   IMPERMANENCE_STORAGE=/persistent   the storage root
 *   IMPERMANENCE_PATH=/var/log         the persisted path: the mount point; storage + path is the source
 *   IMPERMANENCE_KIND=directory|file
 *   IMPERMANENCE_USER_OPTIONS=x-gvfs-hide,x-gvfs-trash   (optional) recorded in /run/mount/utab
 *                                      for file managers, as mount(8) does for a plain bind mount
 * OPTIONS: rw, ro, nosuid, nodev, noexec, noatime, relatime, strictatime, nodiratime (and their
 * opposites, defaults, bind); anything else is refused. A TARGET that is not IMPERMANENCE_PATH
 * (mount(8) found a symlink there) is refused. Needs Linux >= 5.6 (openat2; open_tree and
 * move_mount came in 5.2; mount_setattr, for options, in 5.12).
 * Exit status, as mount(8)'s (which passes it on): 0 mounted; 32 refused or failed (one line on
 * stderr says why: systemd shows it in `systemctl status`); 1 incorrect invocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>
#include <linux/openat2.h>

#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

static const char *prog = "mount.impermanence";
static const char *what_path = "?"; /* the persisted path, named in every message */

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: %s: ", prog, what_path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void no_syscall(const char *name, const char *version)
{
	die(32, "the kernel has no %s (Linux >= %s is needed to mount safely); not mounted", name, version);
}

static int sys_openat2(int dirfd, const char *path, struct open_how *how)
{
	return (int)syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
}

static int sys_open_tree(int dirfd, const char *path, unsigned flags)
{
	return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

static int sys_move_mount(int from_dirfd, const char *from, int to_dirfd, const char *to, unsigned flags)
{
	return (int)syscall(SYS_move_mount, from_dirfd, from, to_dirfd, to, flags);
}

static int sys_mount_setattr(int dirfd, const char *path, unsigned flags, struct mount_attr *attr)
{
	return (int)syscall(SYS_mount_setattr, dirfd, path, flags, attr, sizeof(*attr));
}

static const char *type_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return "a directory";
	case S_IFREG: return "a regular file";
	case S_IFLNK: return "a symlink";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFIFO: return "a fifo";
	case S_IFSOCK: return "a socket";
	default: return "of an unknown type";
	}
}

/* An absolute path without empty, "." or ".." components (and no trailing slash but for "/"). */
static bool clean_absolute(const char *p)
{
	if (p[0] != '/') return false;
	if (p[1] == '\0') return true;
	for (const char *c = p + 1;;) {
		const char *end = strchrnul(c, '/');
		size_t n = (size_t)(end - c);
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return false;
		if (*end == '\0') return true;
		c = end + 1;
	}
}

/* For a message only (after openat2 refused): the first symlink on `rel` below `dirfd`, as
 * `base` + the components up to it; "" if none is found now. */
static void first_symlink(int dirfd, const char *base, const char *rel, char *out, size_t outsz)
{
	char buf[PATH_MAX];
	out[0] = '\0';
	if (snprintf(buf, sizeof(buf), "%s", rel) >= (int)sizeof(buf)) return;
	for (char *slash = buf;; slash++) {
		slash = strchrnul(slash, '/');
		char saved = *slash;
		*slash = '\0';
		struct stat st;
		if (fstatat(dirfd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
			snprintf(out, outsz, "%s%s%s", base, strcmp(base, "/") == 0 ? "" : "/", buf);
			return;
		}
		*slash = saved;
		if (saved == '\0') return;
	}
}

/* Opens `rel` below `dirfd` (O_PATH) without following any symlink; dies with a clear message. */
static int open_nofollow(int dirfd, const char *base, const char *rel, unsigned long long resolve, const char *role)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	int fd = sys_openat2(dirfd, rel, &how);
	if (fd >= 0) return fd;
	int err = errno;
	if (err == ENOSYS) no_syscall("openat2", "5.6");
	if (err == ELOOP) {
		char link[PATH_MAX + 64];
		first_symlink(dirfd, base, rel, link, sizeof(link));
		if (link[0]) die(32, "the %s goes through a symlink (%s is one): refused, not mounted", role, link);
		die(32, "the %s goes through a symlink: refused, not mounted", role);
	}
	if (err == EXDEV) die(32, "the %s leads out of its storage: refused, not mounted", role);
	if (err == EAGAIN) die(32, "the %s changed while it was opened (try again): not mounted", role);
	die(32, "cannot open the %s: %s; not mounted", role, strerror(err));
}

/* Appends `s` to `out`, escaped as libmount's utab wants (space, tab, newline, backslash as \ooo). */
static void mangle(FILE *out, const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\\') fprintf(out, "\\%03o", *c);
		else fputc(*c, out);
	}
}

/* The root and source fields (still escaped as the kernel writes them, as utab wants them) of
 * mount `id` in /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - TYPE SOURCE SUPER". */
static bool mount_fields(uint64_t id, char **root, char **source)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f) return false;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	while (!found && getline(&line, &cap, f) > 0) {
		unsigned long long mid;
		int start = 0, end = 0;
		if (sscanf(line, "%llu %*u %*u:%*u %n%*s%n", &mid, &start, &end) < 1 || mid != id || end == 0) continue;
		const char *sep = strstr(line, " - ");
		if (!sep) break;
		char type[256], src[PATH_MAX * 4 + 1];
		if (sscanf(sep + 3, "%255s %16383s", type, src) != 2) break;
		*root = strndup(line + start, (size_t)(end - start));
		*source = strdup(src);
		found = *root && *source;
	}
	free(line);
	fclose(f);
	return found;
}

/* Whether a utab line is about `target` (already mangled): its TARGET= field equals it. */
static bool utab_line_targets(const char *line, const char *target)
{
	const char *t = strstr(line, " TARGET=");
	if (!t) return false;
	t += 8;
	size_t n = strlen(target);
	return strncmp(t, target, n) == 0 && (t[n] == ' ' || t[n] == '\n' || t[n] == '\0');
}

/*
 * Records the userspace options of the new mount in /run/mount/utab the way libmount does
 * (flock on utab.lock, a new file renamed over the old). libmount (findmnt -m, GLib, file
 * managers) merges a utab line with the kernel's entry only when its SRC, ROOT and TARGET are the
 * kernel's; mount(8)'s own line after a helper (SRC=SOURCE ROOT=/) never matches, so this one is
 * needed. Older lines for the same mount point (left from earlier mounts) are dropped. Best
 * effort: the mount is made whatever happens here.
 */
static void record_utab(int tree, const char *target, const char *options)
{
	struct statx stx;
	if (statx(tree, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0 || !(stx.stx_mask & STATX_MNT_ID)) return;
	char *root = NULL, *source = NULL, *mtarget = NULL, *line = NULL;
	size_t mlen = 0, cap = 0;
	int lock = -1;
	if (!mount_fields(stx.stx_mnt_id, &root, &source)) goto out;
	FILE *m = open_memstream(&mtarget, &mlen);
	if (!m) goto out;
	mangle(m, target);
	if (fclose(m) != 0) goto out;
	if (mkdir("/run/mount", 0755) != 0 && errno != EEXIST) goto out;
	lock = open("/run/mount/utab.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock < 0 || flock(lock, LOCK_EX) != 0) goto out;
	char tmp[] = "/run/mount/utab.XXXXXX";
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) goto out;
	FILE *out = fdopen(fd, "w");
	if (!out) { close(fd); unlink(tmp); goto out; }
	FILE *old = fopen("/run/mount/utab", "re");
	if (old) {
		while (getline(&line, &cap, old) > 0)
			if (!utab_line_targets(line, mtarget)) fputs(line, out);
		fclose(old);
	}
	fprintf(out, "SRC=%s TARGET=%s ROOT=%s OPTS=", source, mtarget, root);
	mangle(out, options);
	fputc('\n', out);
	if (fchmod(fd, 0644) != 0 || fflush(out) != 0 || ferror(out)) { fclose(out); unlink(tmp); goto out; }
	fclose(out);
	if (rename(tmp, "/run/mount/utab") != 0) unlink(tmp);
out:
	if (lock >= 0) close(lock);
	free(line);
	free(mtarget);
	free(source);
	free(root);
}

/* One -o option: sets or clears attribute bits; false if unknown. */
static bool parse_option(const char *o, struct mount_attr *attr)
{
	static const struct { const char *name; uint64_t set, clr; bool atime; } known[] = {
		{ "rw", 0, MOUNT_ATTR_RDONLY, false },
		{ "ro", MOUNT_ATTR_RDONLY, 0, false },
		{ "nosuid", MOUNT_ATTR_NOSUID, 0, false },
		{ "suid", 0, MOUNT_ATTR_NOSUID, false },
		{ "nodev", MOUNT_ATTR_NODEV, 0, false },
		{ "dev", 0, MOUNT_ATTR_NODEV, false },
		{ "noexec", MOUNT_ATTR_NOEXEC, 0, false },
		{ "exec", 0, MOUNT_ATTR_NOEXEC, false },
		{ "nodiratime", MOUNT_ATTR_NODIRATIME, 0, false },
		{ "diratime", 0, MOUNT_ATTR_NODIRATIME, false },
		{ "noatime", MOUNT_ATTR_NOATIME, 0, true },
		{ "relatime", MOUNT_ATTR_RELATIME, 0, true },
		{ "strictatime", MOUNT_ATTR_STRICTATIME, 0, true },
		{ "defaults", 0, 0, false },
		{ "bind", 0, 0, false },
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(o, known[i].name) != 0) continue;
		if (known[i].atime) {
			/* The atime mode is one value: clear the field, then set it. */
			attr->attr_set = (attr->attr_set & ~(uint64_t)MOUNT_ATTR__ATIME) | known[i].set;
			attr->attr_clr |= MOUNT_ATTR__ATIME;
		} else {
			attr->attr_set = (attr->attr_set & ~known[i].clr) | known[i].set;
			attr->attr_clr = (attr->attr_clr & ~known[i].set) | known[i].clr;
		}
		return true;
	}
	return false;
}

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		die(1, "%s is not set: this helper mounts the units impermanence-generator writes (Type=impermanence), which set it", name);
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argv[1][0] == '-' || argv[2][0] == '-') {
		fprintf(stderr, "usage: %s SOURCE TARGET [-sfnvw] [-o OPTIONS] (with IMPERMANENCE_STORAGE, IMPERMANENCE_PATH, IMPERMANENCE_KIND set)\n", prog);
		return 1;
	}
	/* SOURCE (argv[1]) is not used: mount(8) resolved symlinks in it; storage + path is opened instead. */
	const char *target = argv[2], *options = "";
	bool fake = false, nomtab = false;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-o") == 0 && i + 1 < argc) options = argv[++i];
		else if (strcmp(a, "-t") == 0 && i + 1 < argc) i++; /* our own type, or type.subtype */
		else if (strcmp(a, "-N") == 0) die(1, "mounting in another namespace (-N) is not supported");
		else if (a[0] == '-' && a[1] && strspn(a + 1, "sfnvw") == strlen(a + 1)) {
			/* -s sloppy, -v verbose, -w read-write: nothing to do; -f fake: check only; -n: no utab. */
			if (strchr(a, 'f')) fake = true;
			if (strchr(a, 'n')) nomtab = true;
		} else {
			die(1, "unexpected argument %s", a);
		}
	}

	const char *path = getenv("IMPERMANENCE_PATH");
	what_path = path && *path ? path : target;
	const char *storage = need_env("IMPERMANENCE_STORAGE");
	path = need_env("IMPERMANENCE_PATH");
	const char *kind = need_env("IMPERMANENCE_KIND");
	const char *user_options = getenv("IMPERMANENCE_USER_OPTIONS");
	bool want_dir = strcmp(kind, "directory") == 0;
	if (!want_dir && strcmp(kind, "file") != 0) die(1, "IMPERMANENCE_KIND is %s, not directory or file", kind);
	if (!clean_absolute(storage)) die(1, "IMPERMANENCE_STORAGE %s is not a clean absolute path", storage);
	if (!clean_absolute(path) || strcmp(path, "/") == 0) die(1, "IMPERMANENCE_PATH is not a clean absolute path below /");
	/* mount(8) resolved symlinks in TARGET: if that changed it, the mount point was a symlink then. */
	if (strcmp(target, path) != 0)
		die(32, "mount(8) resolved the mount point to %s: it goes through a symlink; refused, not mounted", target);

	struct mount_attr attr = { 0 };
	if (options[0]) {
		char *list = strdup(options);
		if (!list) die(2, "out of memory");
		for (char *save = NULL, *o = strtok_r(list, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
			if (strcmp(o, "remount") == 0) die(32, "remount is not supported: stop and start the mount unit instead");
			if (!parse_option(o, &attr)) die(32, "unsupported mount option %s (supported: ro, rw, nosuid, nodev, noexec, noatime, relatime, strictatime, nodiratime)", o);
		}
		free(list);
	}
	/* mount(8) always passes at least "rw": a clone is read-write unless its source is not, so
	 * rw alone needs no mount_setattr (which older kernels lack). */
	bool has_attr = attr.attr_set != 0 || (attr.attr_clr & ~(uint64_t)MOUNT_ATTR_RDONLY) != 0;
	if (geteuid() != 0) die(1, "must run as root (mount(8) runs it for systemd); not mounted");

	int storage_fd = open(storage, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (storage_fd < 0) die(32, "cannot open the storage %s: %s; not mounted", storage, strerror(errno));
	char role[2 * PATH_MAX + 32];
	snprintf(role, sizeof(role), "source %s%s", storage, path);
	int src = open_nofollow(storage_fd, storage, path + 1, RESOLVE_BENEATH, role);
	int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) die(32, "cannot open /: %s", strerror(errno));
	int dst = open_nofollow(root, "/", path + 1, 0, "mount point");

	struct stat s, t;
	if (fstat(src, &s) != 0 || fstat(dst, &t) != 0) die(32, "cannot stat: %s; not mounted", strerror(errno));
	const char *want = want_dir ? "a directory" : "a regular file";
	if (want_dir ? !S_ISDIR(s.st_mode) : !S_ISREG(s.st_mode))
		die(32, "the source %s%s is %s, not %s: refused, not mounted", storage, path, type_name(s.st_mode), want);
	if (want_dir ? !S_ISDIR(t.st_mode) : !S_ISREG(t.st_mode))
		die(32, "the mount point is %s, not %s: refused, not mounted", type_name(t.st_mode), want);
	if (fake) return 0;

	int tree = sys_open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (tree < 0) {
		if (errno == ENOSYS) no_syscall("open_tree", "5.2");
		die(32, "cannot clone the source %s%s: %s; not mounted", storage, path, strerror(errno));
	}
	if (has_attr && sys_mount_setattr(tree, "", AT_EMPTY_PATH, &attr) != 0) {
		if (errno == ENOSYS) no_syscall("mount_setattr", "5.12");
		die(32, "cannot apply the options %s: %s; not mounted", options, strerror(errno));
	}
	if (sys_move_mount(tree, "", dst, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
		if (errno == ENOSYS) no_syscall("move_mount", "5.2");
		die(32, "cannot mount: %s; not mounted", strerror(errno));
	}
	if (!nomtab && user_options && *user_options) record_utab(tree, path, user_options);
	return 0;
}
