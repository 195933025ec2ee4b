/*
 * impermanence-pathwatch: tell the parent (impermanenced) when the mounts change and when the
 * persisted paths or the storage folders it names change, without waking up otherwise.
 *
 * Usage: impermanence-pathwatch
 *
 * Mounts: /proc/self/mountinfo is polled for POLLPRI/POLLERR, which the kernel raises on every
 * mount or unmount in this mount namespace (what systemd does); no timer, no re-reading.
 * Paths: inotify. What to watch comes on stdin, one set at a time:
 *
 *   dir<TAB>PATH     a folder: its children created, deleted, moved in or out, or their
 *                    owner or mode changed; or the folder itself deleted or moved (the parent
 *                    of a symlink entry or of a mount point, a storage folder where orphans
 *                    would appear or whose declared folders' owner or mode may change).
 *   end              the set is complete: the watches of the previous set are removed, and
 *                    "watching" is printed.
 *
 * PATH is never followed when it is a symlink (IN_DONT_FOLLOW); a path that does not exist is
 * skipped (the parent names it again when it appears). In paths, newline, tab and backslash are
 * written as \n, \t and \\, and the other control bytes and the bytes that are not valid UTF-8
 * as \xHH (both ways; stdin takes \xHH for any byte).
 *
 * stdout, one line per event, flushed after each batch:
 *
 *   ready                      once, when mountinfo is open.
 *   mounts                     the mount table changed: read it again.
 *   change<TAB>PATH            something changed at PATH (a watched folder, or a child of one).
 *   watching<TAB>N<TAB>MISSING<TAB>FAILED
 *                              after "end": N watches in place, MISSING paths that do not exist,
 *                              FAILED paths that could not be watched.
 *   limit<TAB>PATH             the kernel's limit (fs.inotify.max_user_watches) was reached at
 *                              PATH: it and the rest of the set are not watched; rely on scans.
 *   overflow                   the inotify queue overflowed: events were lost, rescan.
 *
 * Exit status: 0 when stdin reaches end of file (the parent died), on SIGTERM/SIGINT, or when
 * stdout is closed; 1 on errors (one line "impermanence-pathwatch: ..." on stderr).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include "line-escape.h"

#define MASK_DIR (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)

static void die(const char *what)
{
	fprintf(stderr, "impermanence-pathwatch: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Watch descriptors of the set in effect (index: wd), with their paths. */
static char **paths;
static size_t npaths;
/* The set being read from stdin. */
static int *pending;
static size_t npending, cpending;
static int *current;
static size_t ncurrent;
static unsigned missing, failed;
static int limited;

static char out[65536];
static size_t outlen;

static void flush_out(void)
{
	size_t off = 0;
	while (off < outlen) {
		ssize_t n = write(STDOUT_FILENO, out + off, outlen - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(0); /* the parent is gone */
		off += (size_t)n;
	}
	outlen = 0;
}

static void put(const char *s, size_t n)
{
	if (outlen + n > sizeof out)
		flush_out();
	memcpy(out + outlen, s, n);
	outlen += n;
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

static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '\\' && r[1] == 'x' && isxdigit((unsigned char)r[2]) && isxdigit((unsigned char)r[3])) {
			char hex[3] = { r[2], r[3], 0 };
			*w++ = (char)strtoul(hex, NULL, 16);
			r += 3;
		} else if (*r == '\\' && r[1]) {
			r++;
			*w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
		} else
			*w++ = *r;
	}
	*w = 0;
}

static void add(int ino, char *path)
{
	unescape(path);
	if (limited)
		return;
	int wd = inotify_add_watch(ino, path, MASK_DIR);
	if (wd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			missing++;
		else if (errno == ENOSPC) {
			limited = 1;
			put("limit\t", 6);
			put_escaped(path);
			put("\n", 1);
		} else
			failed++;
		return;
	}
	if ((size_t)wd >= npaths) {
		size_t n = (size_t)wd * 2 + 16;
		char **p = realloc(paths, n * sizeof *p);
		if (!p)
			die("realloc");
		memset(p + npaths, 0, (n - npaths) * sizeof *p);
		paths = p;
		npaths = n;
	}
	/* The same inode named twice gets the same wd: it is reported by the first name. */
	if (paths[wd] == NULL && (paths[wd] = strdup(path)) == NULL)
		die("strdup");
	if (npending == cpending) {
		cpending = cpending * 2 + 64;
		if (!(pending = realloc(pending, cpending * sizeof *pending)))
			die("realloc");
	}
	pending[npending++] = wd;
}

/* The set is complete: drop the watches of the previous set that the new one does not hold. */
static void commit(int ino)
{
	for (size_t i = 0; i < ncurrent; i++) {
		int keep = 0;
		for (size_t j = 0; j < npending && !keep; j++)
			keep = pending[j] == current[i];
		if (!keep && paths[current[i]]) {
			inotify_rm_watch(ino, current[i]);
			free(paths[current[i]]);
			paths[current[i]] = NULL;
		}
	}
	free(current);
	current = pending;
	ncurrent = npending;
	pending = NULL;
	npending = cpending = 0;
	char line[128];
	put(line, (size_t)snprintf(line, sizeof line, "watching\t%zu\t%u\t%u\n", ncurrent, missing, failed));
	missing = failed = 0;
	limited = 0;
}

static char in[1 << 16];
static size_t inlen;

static void read_stdin(int ino)
{
	ssize_t n = read(STDIN_FILENO, in + inlen, sizeof in - inlen - 1);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0)
		exit(0);
	inlen += (size_t)n;
	size_t start = 0;
	for (size_t i = 0; i < inlen; i++) {
		if (in[i] != '\n')
			continue;
		in[i] = 0;
		char *line = in + start;
		start = i + 1;
		if (strcmp(line, "end") == 0) {
			commit(ino);
			continue;
		}
		if (strncmp(line, "dir\t", 4) == 0)
			add(ino, line + 4);
	}
	memmove(in, in + start, inlen - start);
	inlen -= start;
	if (inlen == sizeof in - 1)
		inlen = 0; /* a line longer than any path: dropped */
}

static void read_inotify(int ino)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(ino, buf, sizeof buf);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		die("read inotify");
	}
	for (char *p = buf; p < buf + n;) {
		struct inotify_event *e = (struct inotify_event *)p;
		p += sizeof *e + e->len;
		if (e->mask & IN_Q_OVERFLOW) {
			put("overflow\n", 9);
			continue;
		}
		if (e->wd < 0 || (size_t)e->wd >= npaths || !paths[e->wd])
			continue;
		if (e->mask & IN_IGNORED) {
			/* gone (deleted, or its filesystem unmounted): the parent is told, and names it again. */
			put("change\t", 7);
			put_escaped(paths[e->wd]);
			put("\n", 1);
			free(paths[e->wd]);
			paths[e->wd] = NULL;
			continue;
		}
		put("change\t", 7);
		put_escaped(paths[e->wd]);
		if (e->len && e->name[0]) {
			put("/", 1);
			put_escaped(e->name);
		}
		put("\n", 1);
	}
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: impermanence-pathwatch (what to watch comes on stdin)\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");
	int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (mfd < 0)
		die("/proc/self/mountinfo");
	int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino < 0)
		die("inotify_init1");
	put("ready\n", 6);
	flush_out();
	struct pollfd pfd[4] = {
		{ .fd = mfd, .events = POLLPRI },
		{ .fd = ino, .events = POLLIN },
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = sfd, .events = POLLIN },
	};
	for (;;) {
		if (poll(pfd, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (pfd[3].revents)
			return 0;
		/* The kernel re-arms the mountinfo event when it reports it: no read needed. */
		if (pfd[0].revents & (POLLPRI | POLLERR))
			put("mounts\n", 7);
		if (pfd[1].revents & POLLIN)
			read_inotify(ino);
		if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR))
			read_stdin(ino);
		flush_out();
	}
}
