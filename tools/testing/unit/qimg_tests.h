/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Groups of the format-core unit tests (build/san/test_fmt).  Each runner
 * builds its cmocka test array from a table and returns the number of
 * failed cases.
 */
#ifndef QIMG_TESTS_H
#define QIMG_TESTS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "qimg_fmt.h"

int qimg_test_run_vectors(void);
int qimg_test_run_roundtrip(void);
int qimg_test_run_qemu(void);
int qimg_test_run_overlap(void);
int qimg_test_run_journal(void);
int qimg_test_run_qed(void);
int qimg_test_run_crypt(void);

/*
 * Run @n tests, each calling @fn with the address of element i of @table
 * (elements of @size bytes) as its state and named by the const char *
 * found @name_off bytes into that element.
 */
int qimg_test_run_table(const char *group, const void *table, size_t n,
			size_t size, size_t name_off,
			void (*fn)(void **state));

#endif /* QIMG_TESTS_H */
