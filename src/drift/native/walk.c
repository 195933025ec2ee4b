/*
 * impermanence-walk: walks ONE filesystem fast and prints per-directory aggregates of what was
 * written since a time, for the drift scan (src/drift/scan.ts) to group.
 *
 *   impermanence-walk ROOT SINCE
 *
 * ROOT: an absolute directory. SINCE: seconds since the epoch, may have a fraction; 0 counts
 * everything. Reads from stdin, until EOF, what to skip, one per line:
 *   /var/log                 a logical path (host path minus ROOT; ROOT itself is "/")
 *   glob PATTERN             an fnmatch(3) pattern (FNM_PATHNAME) over the logical path,
 *                            such as /home/ then a star then /.cache
 * A skipped or matching path (file or directory) is neither counted nor entered.
 *
 * Walks depth-first without following symlinks and never into another filesystem (st_dev
 * differs from ROOT's, like find -xdev). Each directory is opened relative to its parent's fd,
 * with O_NOFOLLOW, never by full path: a symlink swapped in during the walk cannot redirect it.
 * Every non-directory entry (file, symlink, other) whose ctime >= SINCE (or any, for 0) counts
 * towards the directory that holds it. Output, for each directory holding a counted entry:
 *   FILES \t BYTES \t LOGICALPATH \n
 * children before their parent, then a last line
 *   total \t SCANNED \t - \n
 * SCANNED: the non-directory entries looked at, counted or not. \n, \t and \ in paths are
 * written as \n, \t and \\. Entries that vanish or cannot be read are skipped silently; a bad
 * ROOT or SINCE exits 1 with a message on stderr (2 for usage).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static dev_t root_dev;
static bool since_all;
static long long since_sec;
static long since_nsec;
static unsigned long long scanned;

static char **skips; /* sorted, for bsearch */
static size_t n_skips;
static char **globs;
static size_t n_globs;

/* The logical path being looked at: "" for ROOT, then "/a", "/a/b"... Grows as needed. */
static char *path;
static size_t path_cap;

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fputs("impermanence-walk: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool skipped(const char *p)
{
	if (n_skips && bsearch(&p, skips, n_skips, sizeof *skips, cmp_str))
		return true;
	for (size_t i = 0; i < n_globs; i++)
		if (fnmatch(globs[i], p, FNM_PATHNAME) == 0)
			return true;
	return false;
}

static void read_skips(void)
{
	char *line = NULL;
	size_t cap = 0, skips_cap = 0, globs_cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = 0;
		if (n == 0)
			continue;
		if (strncmp(line, "glob ", 5) == 0) {
			if (n_globs == globs_cap)
				globs = xrealloc(globs, (globs_cap = globs_cap * 2 + 16) * sizeof *globs);
			globs[n_globs++] = strdup(line + 5);
		} else {
			while (n > 1 && line[n - 1] == '/') /* "/var/log/" is "/var/log" */
				line[--n] = 0;
			if (n_skips == skips_cap)
				skips = xrealloc(skips, (skips_cap = skips_cap * 2 + 16) * sizeof *skips);
			skips[n_skips++] = strdup(line);
		}
	}
	free(line);
	if (n_skips)
		qsort(skips, n_skips, sizeof *skips, cmp_str);
}

/* SINCE as whole seconds and nanoseconds, exactly (no floating point). */
static bool parse_since(const char *s)
{
	long long sec = 0;
	long nsec = 0;
	const char *p = s;
	if (!*p)
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (sec > (long long)1e15)
			return false;
		sec = sec * 10 + (*p - '0');
	}
	if (*p == '.') {
		p++;
		long scale = 100000000;
		for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
			nsec += (*p - '0') * scale; /* digits past the ninth add 0 */
	}
	if (*p || p == s)
		return false;
	since_sec = sec;
	since_nsec = nsec;
	since_all = sec == 0 && nsec == 0;
	return true;
}

static void put_escaped(const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '\n': fputs_unlocked("\\n", stdout); break;
		case '\t': fputs_unlocked("\\t", stdout); break;
		case '\\': fputs_unlocked("\\\\", stdout); break;
		default: putc_unlocked(*s, stdout);
		}
	}
}

/* Walks the directory open as fd (owned: closed here), whose logical path is path[0..len). */
static void walk(int fd, size_t len)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	unsigned long long files = 0;
	long long bytes = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *name = e->d_name;
		if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
			continue;
		size_t nlen = strlen(name);
		if (len + nlen + 2 > path_cap)
			path = xrealloc(path, path_cap = (len + nlen + 2) * 2);
		path[len] = '/';
		memcpy(path + len + 1, name, nlen + 1);
		if (skipped(path))
			continue;

		struct stat st;
		if (e->d_type == DT_DIR) {
			/* Open first, then fstat the fd: what is entered is what was checked. */
			int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				if (fstat(sub, &st) == 0 && st.st_dev == root_dev)
					walk(sub, len + 1 + nlen);
				else
					close(sub);
				continue;
			}
			if (errno != ENOTDIR && errno != ELOOP)
				continue; /* EACCES, vanished... */
			/* replaced by a non-directory meanwhile: look at it as one */
		}
		if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != root_dev)
				continue;
			int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				continue;
			struct stat st2;
			if (fstat(sub, &st2) == 0 && st2.st_dev == root_dev)
				walk(sub, len + 1 + nlen);
			else
				close(sub);
			continue;
		}
		scanned++;
		if (since_all || st.st_ctim.tv_sec > since_sec ||
		    (st.st_ctim.tv_sec == since_sec && st.st_ctim.tv_nsec >= since_nsec)) {
			files++;
			bytes += st.st_size;
		}
	}
	closedir(d);
	if (files) {
		path[len] = 0;
		printf("%llu\t%lld\t", files, bytes);
		put_escaped(len ? path : "/");
		putc_unlocked('\n', stdout);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fputs("usage: impermanence-walk ROOT SINCE  (skips on stdin: a logical path, or \"glob PATTERN\", a line each)\n", stderr);
		return 2;
	}
	const char *root = argv[1];
	if (root[0] != '/') {
		fprintf(stderr, "impermanence-walk: ROOT must be an absolute path: %s\n", root);
		return 1;
	}
	if (!parse_since(argv[2])) {
		fprintf(stderr, "impermanence-walk: SINCE must be seconds since the epoch: %s\n", argv[2]);
		return 1;
	}
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		fprintf(stderr, "impermanence-walk: %s: %s\n", root, strerror(errno));
		return 1;
	}
	root_dev = st.st_dev;

	/* One fd per level of depth: allow as deep a tree as the hard limit does. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	read_skips();
	static char outbuf[1 << 20];
	setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

	path_cap = 4096;
	path = xrealloc(NULL, path_cap);
	path[0] = 0;
	if (skipped("/"))
		close(fd);
	else
		walk(fd, 0);
	printf("total\t%llu\t-\n", scanned);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "impermanence-walk: writing to stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
