/*
 * impermanence-fanotify: report every write to one whole filesystem to the parent (impermanenced).
 *
 * Usage: impermanence-fanotify MOUNTPOINT
 *
 * Needs root (CAP_SYS_ADMIN for fanotify_init, CAP_DAC_READ_SEARCH for open_by_handle_at) and
 * Linux >= 5.9 (FAN_REPORT_DFID_NAME with FAN_MARK_FILESYSTEM). One fanotify mark covers the whole
 * filesystem (superblock) that contains MOUNTPOINT, including mkdir -p trees made faster than any
 * recursive inotify watcher can add watches, and short-lived files.
 *
 * A btrfs subvolume (a root mounted with subvol=, the layout of most btrfs installs): the kernel
 * refuses a filesystem or mount mark given a path inside a subvolume other than the top-level
 * one (EXDEV: the subvolume's fsid differs from the superblock's), and an inode mark is not
 * recursive. So the mark is placed through the top-level subvolume's root directory instead, which
 * is opened by file handle (root tree 5, inode 256, its generation read with BTRFS_IOC_TREE_SEARCH)
 * without mounting anything: the same superblock mark, the same events and latency as on ext4.
 * It also sees writes in the filesystem's other subvolumes; only those whose directory is
 * reachable through MOUNTPOINT (nested subvolumes included) are printed.
 *
 * Protocol, stdout (one line per event, flushed after every read() of the fanotify queue):
 *
 *   ready                    once, when the mark is in place: events after this line are seen.
 *   EVENT<TAB>PID<TAB>PATH   EVENT is create, moved_to, close_write, moved_from or delete.
 *   overflow<TAB>PID<TAB>MOUNTPOINT
 *                            the kernel queue (fs.fanotify.max_queued_events) overflowed and
 *                            events were lost: rescan MOUNTPOINT.
 *   sync                     once per newline read on stdin, after every event queued before
 *                            that newline was read has been printed: a barrier. fanotify queues
 *                            an event before the write's system call returns, so a write that
 *                            returned before the parent asked is printed before its "sync".
 *
 *   - The kernel merges queued events for the same (directory, name, pid); a merged event is
 *     printed as one line per flag, always in the order create, moved_to, close_write,
 *     moved_from, delete. That is not necessarily the order they happened in (rm x; touch x by one
 *     process prints create, close_write, delete): stat the path to learn its current state.
 *   - FAN_ONDIR is set: directories are reported too (mkdir is create, rmdir is delete, a renamed
 *     directory is moved_from/moved_to of the directory only, not of its contents).
 *   - An editor-style rename over an existing file is moved_from + moved_to only (no delete).
 *   - PID is the process (thread group) that caused the event, as seen in this process's PID
 *     namespace; 0 when it is not visible there (and for overflow). Events caused by this process
 *     itself are never printed.
 *   - PATH is the directory's path resolved when the event is read (not when it happened: a
 *     directory renamed meanwhile shows its new path), as seen in this process's mount namespace,
 *     through the mount given as MOUNTPOINT, with "/NAME" appended. When the directory no longer
 *     exists (deleted before the event was read, e.g. rm -rf), PATH is "?/NAME" (or "?" with no
 *     name). Such events always come with a later delete (or moved_from) of an ancestor directory
 *     whose parent does exist: drop everything under that path. When MOUNTPOINT mounts only part
 *     of its filesystem (a btrfs subvolume, a bind mount of a folder), events in directories that
 *     exist but cannot be reached through it are not printed.
 *   - In PATH, newline, tab and backslash are written as \n, \t and \\, the other control bytes
 *     (0x01-0x1f, 0x7f: a "\r" must not end a line) and the bytes that are not valid UTF-8 as
 *     \xHH: the output is valid UTF-8, and two names never read the same.
 *
 * stderr: one line "impermanence-fanotify: ..." on error.
 * Exit status: 0 when stdin reaches end of file (the parent died or closed it; anything written to
 * stdin but newlines is ignored, so give it a pipe, not /dev/null), on SIGTERM/SIGINT/SIGHUP, or when stdout is
 * closed; 1 on usage or other errors; 2 when the kernel or filesystem does not support this
 * (e.g. overlayfs, a kernel older than 5.9); 3 without permission (not root).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include "line-escape.h"

enum { EXIT_OK = 0, EXIT_OTHER = 1, EXIT_UNSUPPORTED = 2, EXIT_PERMISSION = 3 };

#define NAME "impermanence-fanotify"
#define EVENTS (FAN_CREATE | FAN_MOVED_TO | FAN_CLOSE_WRITE | FAN_MOVED_FROM | FAN_DELETE)

/* Printing order for the flags of one (possibly merged) event. */
static const struct {
	uint64_t bit;
	const char *name;
} kinds[] = {
	{ FAN_CREATE, "create" },           { FAN_MOVED_TO, "moved_to" }, { FAN_CLOSE_WRITE, "close_write" },
	{ FAN_MOVED_FROM, "moved_from" }, { FAN_DELETE, "delete" },
};

static int mount_fd = -1;
static pid_t self;
static char root_path[PATH_MAX];
/* MOUNTPOINT mounts only part of its filesystem: a resolved path is checked to lead back to the
 * same directory before it is printed (see dir_path). */
static bool partial_mount;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(NAME ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

/* ---- output: one buffer, written with write(2) after each batch ---- */

static char out[1 << 16];
static size_t out_len;

static void flush_out(void)
{
	size_t done = 0;
	while (done < out_len) {
		ssize_t n = write(STDOUT_FILENO, out + done, out_len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EPIPE)
				exit(EXIT_OK); /* the parent is gone */
			die(EXIT_OTHER, "writing to stdout: %s", strerror(errno));
		}
		done += (size_t)n;
	}
	out_len = 0;
}

static void put(const char *s, size_t n)
{
	if (out_len + n > sizeof out)
		flush_out();
	memcpy(out + out_len, s, n); /* n is at most 2 * PATH_MAX + a little, far below sizeof out */
	out_len += n;
}

/* s, escaped (line-escape.h). */
static void put_escaped(const char *s)
{
	char buf[5];
	size_t len, step;
	for (const unsigned char *p = (const unsigned char *)s; *p; p += step) {
		const char *e = escape_at(p, buf, &len, &step);
		put(e, len);
	}
}

static void emit(const char *event, int pid, const char *dir, const char *name)
{
	char num[16];
	put(event, strlen(event));
	put(num, (size_t)snprintf(num, sizeof num, "\t%d\t", pid));
	put_escaped(dir);
	if (name) {
		if (!(dir[0] == '/' && dir[1] == 0))
			put("/", 1);
		put_escaped(name);
	}
	put("\n", 1);
}

/* ---- resolving a directory file handle to a path ---- */

/* struct file_handle with room for the largest handle; keeps the copy aligned. */
struct handle_buf {
	struct file_handle fh;
	unsigned char bytes[MAX_HANDLE_SZ];
};

/* The last handle resolved in the current read() batch: consecutive events usually share a
 * directory. Cleared at each batch so a renamed or deleted directory is looked up again. */
static struct handle_buf last_handle;
static bool last_valid;
static char last_path[PATH_MAX];

static bool same_handle(const struct file_handle *a, const struct file_handle *b)
{
	return a->handle_bytes == b->handle_bytes && a->handle_type == b->handle_type &&
	       memcmp(a->f_handle, b->f_handle, a->handle_bytes) == 0;
}

/* The path of an open directory, or false when it is deleted or not reachable from our root. */
static bool fd_path(int fd, char *buf, size_t size)
{
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, size - 1);
	if (n <= 0 || (size_t)n >= size - 1 || buf[0] != '/')
		return false; /* error, truncated, or "(unreachable)/..." */
	buf[n] = 0;
	static const char deleted[] = " (deleted)";
	size_t dl = sizeof deleted - 1;
	if ((size_t)n > dl && memcmp(buf + n - dl, deleted, dl) == 0) {
		/* Unlinked (no link left), or really named "... (deleted)": then the whole name. */
		struct stat a;
		return fstat(fd, &a) == 0 && a.st_nlink > 0;
	}
	return true;
}

/* An open directory that exists but lies outside MOUNTPOINT's part of the filesystem: the kernel
 * then gives a path relative to whatever root it reached (e.g. "/" for the top-level subvolume),
 * which must not be taken for a path on our root. False when the path leads to it (or is gone). */
static bool elsewhere(int fd, const char *path)
{
	struct stat a, b;
	if (!partial_mount || fstat(fd, &a) < 0)
		return false;
	if (lstat(path, &b) < 0)
		return errno != ENOENT && errno != ENOTDIR; /* renamed or deleted meanwhile: "?" */
	return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

enum where { DIR_OK, DIR_GONE, DIR_ELSEWHERE };
static enum where last_where;

static enum where dir_path(const struct file_handle *fh, char *buf, size_t size)
{
	if (fh->handle_bytes > MAX_HANDLE_SZ)
		return DIR_GONE;
	if (!(last_valid && same_handle(fh, &last_handle.fh))) {
		memcpy(&last_handle.fh, fh, sizeof *fh + fh->handle_bytes);
		last_valid = true;
		int fd = open_by_handle_at(mount_fd, &last_handle.fh, O_PATH | O_CLOEXEC);
		last_where = DIR_GONE;
		if (fd >= 0 && fd_path(fd, last_path, sizeof last_path))
			last_where = elsewhere(fd, last_path) ? DIR_ELSEWHERE : DIR_OK;
		if (fd >= 0)
			close(fd);
	}
	if (last_where == DIR_OK)
		snprintf(buf, size, "%s", last_path);
	return last_where;
}

/* ---- events ---- */

static void handle_event(const struct fanotify_event_metadata *m)
{
	if (m->mask & FAN_Q_OVERFLOW) {
		emit("overflow", m->pid, root_path, NULL);
		return;
	}
	if (m->pid == self || !(m->mask & EVENTS))
		return;

	const char *name = NULL;
	struct handle_buf fh;
	bool have_dir = false;
	const char *p = (const char *)m + m->metadata_len, *end = (const char *)m + m->event_len;
	while (p + sizeof(struct fanotify_event_info_header) <= end) {
		struct fanotify_event_info_header hdr;
		memcpy(&hdr, p, sizeof hdr);
		if (hdr.len < sizeof hdr || p + hdr.len > end)
			break;
		if ((hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME || hdr.info_type == FAN_EVENT_INFO_TYPE_DFID) &&
		    hdr.len >= sizeof(struct fanotify_event_info_fid) + sizeof(struct file_handle)) {
			const char *h = p + sizeof(struct fanotify_event_info_fid);
			memcpy(&fh.fh, h, sizeof fh.fh);
			size_t rest = hdr.len - sizeof(struct fanotify_event_info_fid) - sizeof(struct file_handle);
			if (fh.fh.handle_bytes <= MAX_HANDLE_SZ && fh.fh.handle_bytes <= rest) {
				memcpy(fh.fh.f_handle, h + sizeof(struct file_handle), fh.fh.handle_bytes);
				have_dir = true;
				const char *nm = h + sizeof(struct file_handle) + fh.fh.handle_bytes;
				if (hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME && nm < p + hdr.len &&
				    memchr(nm, 0, (size_t)(p + hdr.len - nm)) && strcmp(nm, ".") != 0)
					name = nm;
			}
		}
		p += hdr.len;
	}

	static char dir[PATH_MAX];
	enum where found = have_dir ? dir_path(&fh.fh, dir, sizeof dir) : DIR_GONE;
	if (found == DIR_ELSEWHERE)
		return;
	const char *where = found == DIR_OK ? dir : "?";
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (m->mask & kinds[i].bit)
			emit(kinds[i].name, m->pid, where, name);
}

/* Reads the queue until it is empty; flushes stdout after each read(). */
static void drain(int fan)
{
	static char buf[1 << 18] __attribute__((aligned(8)));
	for (;;) {
		ssize_t n = read(fan, buf, sizeof buf);
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			die(EXIT_OTHER, "reading fanotify events: %s", strerror(errno));
		}
		last_valid = false;
		const struct fanotify_event_metadata *m = (const void *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			if (m->vers != FANOTIFY_METADATA_VERSION)
				die(EXIT_OTHER, "fanotify metadata version %u, expected %u", m->vers,
				    FANOTIFY_METADATA_VERSION);
			handle_event(m);
		}
		flush_out();
	}
}

/* ---- setup ---- */

/* Sets partial_mount when MOUNTPOINT is not a mount of its filesystem's root (a bind mount of a
 * folder, a btrfs subvolume): directories outside it are then not printed. Unknown: assume so. */
static void check_mount_root(int mnt_id)
{
	partial_mount = true;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	char line[PATH_MAX * 2];
	while (fgets(line, sizeof line, f)) {
		int id;
		char root[PATH_MAX];
		if (sscanf(line, "%d %*d %*s %4095s", &id, root) == 2 && id == mnt_id) {
			partial_mount = strcmp(root, "/") != 0;
			break;
		}
	}
	fclose(f);
}

static int errno_class(int e)
{
	switch (e) {
	case EPERM:
	case EACCES:
		return EXIT_PERMISSION;
	case EOPNOTSUPP:
	case EXDEV:
	case ENODEV:
	case EINVAL:
	case ENOSYS:
	case ESTALE:
		return EXIT_UNSUPPORTED;
	default:
		return EXIT_OTHER;
	}
}

/*
 * MOUNTPOINT is in a btrfs subvolume (fanotify_mark gave EXDEV): marks the superblock through the
 * top-level subvolume's root directory (tree BTRFS_FS_TREE_OBJECTID, inode
 * BTRFS_FIRST_FREE_OBJECTID), opened by a file handle built as btrfs's own export code builds it
 * (struct btrfs_fid without parent: objectid, root objectid, generation). Nothing is mounted.
 * Returns 0, or the errno to report.
 */
static int mark_btrfs_top(int fan)
{
	struct statfs sfs;
	if (fstatfs(mount_fd, &sfs) < 0 || sfs.f_type != BTRFS_SUPER_MAGIC)
		return EXDEV;

	/* The generation of the top-level root directory's inode: the handle must carry it. */
	struct btrfs_ioctl_search_args args;
	memset(&args, 0, sizeof args);
	args.key.tree_id = BTRFS_FS_TREE_OBJECTID;
	args.key.min_objectid = args.key.max_objectid = BTRFS_FIRST_FREE_OBJECTID;
	args.key.min_type = args.key.max_type = BTRFS_INODE_ITEM_KEY;
	args.key.max_offset = UINT64_MAX;
	args.key.max_transid = UINT64_MAX;
	args.key.nr_items = 1;
	if (ioctl(mount_fd, BTRFS_IOC_TREE_SEARCH, &args) < 0)
		return errno;
	struct btrfs_ioctl_search_header sh;
	memcpy(&sh, args.buf, sizeof sh);
	if (args.key.nr_items < 1 || sh.len < sizeof(struct btrfs_inode_item))
		return ESTALE;
	struct btrfs_inode_item item;
	memcpy(&item, args.buf + sizeof sh, sizeof item);

	/* FILEID_BTRFS_WITHOUT_PARENT (include/linux/exportfs.h): u64 objectid, u64 root, u32 gen. */
	struct handle_buf top = { .fh.handle_bytes = 20, .fh.handle_type = 0x4d };
	uint64_t objectid = BTRFS_FIRST_FREE_OBJECTID, root = BTRFS_FS_TREE_OBJECTID;
	uint32_t gen = (uint32_t)le64toh(item.generation); /* the inode keeps the low 32 bits */
	memcpy(top.fh.f_handle, &objectid, 8);
	memcpy(top.fh.f_handle + 8, &root, 8);
	memcpy(top.fh.f_handle + 16, &gen, 4);
	/* Not O_PATH: fanotify_mark does not take an O_PATH descriptor. */
	int fd = open_by_handle_at(mount_fd, &top.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int e = fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, EVENTS | FAN_ONDIR, fd, NULL) < 0 ? errno : 0;
	close(fd);
	return e;
}

int main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-')
		die(EXIT_OTHER, "usage: " NAME " MOUNTPOINT (reports writes to its whole filesystem on stdout)");
	const char *mnt = argv[1];
	self = getpid();

	struct stat st;
	if (fstat(STDIN_FILENO, &st) < 0)
		die(EXIT_OTHER, "stdin is closed; give it a pipe: this program exits when it reaches end of file");

	mount_fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mount_fd < 0)
		die(errno == EACCES ? EXIT_PERMISSION : EXIT_OTHER, "%s: %s", mnt, strerror(errno));
	if (!fd_path(mount_fd, root_path, sizeof root_path))
		snprintf(root_path, sizeof root_path, "%s", mnt);

	/* Resolving file handles back to paths must work here, with our privileges. */
	struct handle_buf probe = { .fh.handle_bytes = MAX_HANDLE_SZ };
	int mnt_id;
	if (name_to_handle_at(mount_fd, "", &probe.fh, &mnt_id, AT_EMPTY_PATH) < 0)
		die(errno_class(errno),
		    "%s: cannot watch this filesystem: it has no file handles (%s), which fanotify needs "
		    "(e.g. overlayfs without nfs_export=on, procfs)",
		    root_path, strerror(errno));
	int probe_fd = open_by_handle_at(mount_fd, &probe.fh, O_PATH | O_CLOEXEC);
	if (probe_fd < 0)
		die(errno_class(errno), "%s: open_by_handle_at: %s%s", root_path, strerror(errno),
		    errno == EPERM ? " (needs root: CAP_DAC_READ_SEARCH)" : "");
	close(probe_fd);

	int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
				O_RDONLY | O_LARGEFILE);
	if (fan < 0) {
		if (errno == EPERM)
			die(EXIT_PERMISSION, "fanotify_init: %s (needs root: CAP_SYS_ADMIN)", strerror(errno));
		if (errno == EINVAL)
			die(EXIT_UNSUPPORTED, "fanotify_init: %s (this kernel lacks FAN_REPORT_DFID_NAME: needs Linux >= 5.9)",
			    strerror(errno));
		die(EXIT_OTHER, "fanotify_init: %s", strerror(errno));
	}
	if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, EVENTS | FAN_ONDIR, mount_fd, NULL) < 0) {
		int e = errno;
		const char *how = "";
		if (e == EXDEV && (e = mark_btrfs_top(fan)) == 0)
			how = NULL; /* marked through the top-level subvolume */
		else if (e == EXDEV)
			how = " (a btrfs subvolume whose top-level subvolume could not be reached)";
		else if (errno_class(e) == EXIT_UNSUPPORTED)
			how = " (unsupported filesystem or kernel)";
		if (how)
			die(errno_class(e), "%s: cannot watch this filesystem with fanotify: %s%s", root_path,
			    strerror(e), how);
	}

	check_mount_root(mnt_id);

	/* Signals arrive on a descriptor, so the loop below is the only place that acts. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0)
		die(EXIT_OTHER, "sigprocmask: %s", strerror(errno));
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die(EXIT_OTHER, "signalfd: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	put("ready\n", 6);
	flush_out();

	struct pollfd pfd[3] = {
		{ .fd = fan, .events = POLLIN },
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = sfd, .events = POLLIN },
	};
	for (;;) {
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			die(EXIT_OTHER, "poll: %s", strerror(errno));
		}
		if (pfd[2].revents)
			break;
		if (pfd[0].revents & POLLIN)
			drain(fan);
		else if (pfd[0].revents)
			die(EXIT_OTHER, "fanotify descriptor failed");
		if (pfd[1].revents) {
			char junk[4096];
			ssize_t n = read(STDIN_FILENO, junk, sizeof junk);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) || (pfd[1].revents & POLLNVAL))
				break;
			/* A barrier per newline: everything queued before it was read goes out first. */
			size_t syncs = 0;
			for (ssize_t i = 0; i < n; i++)
				syncs += junk[i] == '\n';
			if (syncs) {
				drain(fan);
				while (syncs--)
					put("sync\n", 5);
				flush_out();
			}
		}
	}
	flush_out();
	return EXIT_OK;
}
