// SPDX-License-Identifier: Apache-2.0
/*
 * The "small binary" the exec benchmark runs: a static executable without libc
 * that exits 0 at once, so that the figure is execve itself (no dynamic loader,
 * no libraries mapped).
 */
void _start(void)
{
	__asm__ volatile("mov $60, %eax\n\t" /* exit */
			 "xor %edi, %edi\n\t"
			 "syscall");
}
