// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the qimg format core.  Run through tools/testing/unit/run,
 * which selects cmocka's TAP output so every case is one "ok N - name" or
 * "not ok N - name" line.
 */
#include <stdlib.h>

#include "qimg_tests.h"

int qimg_test_run_table(const char *group, const void *table, size_t n,
			size_t size, size_t name_off,
			void (*fn)(void **state))
{
	struct CMUnitTest *tests = calloc(n, sizeof(*tests));
	const char *base = table;
	size_t i;
	int failed;

	if (!tests) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (i = 0; i < n; i++) {
		const void *elem = base + i * size;

		memcpy(&tests[i].name, (const char *)elem + name_off,
		       sizeof(tests[i].name));
		tests[i].test_func = fn;
		tests[i].initial_state = (void *)elem;
	}
	failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
	free(tests);
	return failed;
}

int main(void)
{
	int failed = 0;

	failed += qimg_test_run_vectors();
	failed += qimg_test_run_roundtrip();
	failed += qimg_test_run_qemu();
	failed += qimg_test_run_overlap();
	failed += qimg_test_run_journal();
	failed += qimg_test_run_qed();
	failed += qimg_test_run_crypt();
	return failed ? 1 : 0;
}
