/*
 * The escaping of a path in the drift helpers' line protocols (impermanence-walk,
 * impermanence-fanotify, impermanence-pathwatch), one definition for the three: newline, tab and
 * backslash as \n, \t and \\; the other control bytes (a "\r" would end a line for some readers)
 * and the bytes that are not valid UTF-8 (which a reader would decode to U+FFFD, merging
 * different names) as \xHH. Read back by unescapeLine (src/drift/helper.ts).
 */
#ifndef IMPERMANENCE_LINE_ESCAPE_H
#define IMPERMANENCE_LINE_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

/* The length of the valid UTF-8 sequence (2 to 4 bytes, no overlong form, no surrogate, at most
 * U+10FFFF) at p, whose first byte is >= 0x80; 0 when it is not one. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* What the character at p is written as: *len bytes at the returned pointer (p itself, or buf);
 * *step: how many bytes of p they stand for. At most 4 bytes are written for each byte of p. */
static const char *escape_at(const unsigned char *p, char buf[5], size_t *len, size_t *step)
{
	size_t n;
	*step = 1;
	*len = 2;
	switch (*p) {
	case '\n': return "\\n";
	case '\t': return "\\t";
	case '\\': return "\\\\";
	}
	if (*p >= 0x80 && (n = utf8_len(p))) {
		*len = *step = n;
		return (const char *)p;
	}
	if (*p < 0x20 || *p >= 0x7f) {
		*len = (size_t)snprintf(buf, 5, "\\x%02x", *p);
		return buf;
	}
	*len = 1;
	return (const char *)p;
}

#endif
