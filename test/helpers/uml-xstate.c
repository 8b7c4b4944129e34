// LD_PRELOAD shim for Debian 12's user-mode-linux (6.1) on hosts whose CPUs
// have AMX (Sapphire Rapids and later).
//
// Why: UML saves and restores a guest thread's FPU state with
// ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, NT_X86_XSTATE) into a buffer
// sized at build time (2696 bytes: x87, SSE, AVX, AVX-512 and PKRU in the
// standard XSAVE layout). The host kernel accepts a shorter buffer for GET but
// refuses SET unless the buffer is exactly its full user XSAVE size (11008
// bytes with AMX tile data), so UML dies at its first user process with
// "ptrace set fp regs failed, errno = 14". Newer UML kernels size the buffer
// at run time; Debian 12's does not.
//
// What: a SET with a short buffer is turned into a SET with the full size:
// the guest's bytes first, then the rest of the thread's current state read
// back from the kernel. Everything past UML's buffer is AMX state, which a
// guest cannot use (it needs arch_prctl(ARCH_REQ_XCOMP_PERM), which UML does
// not offer), so that rest is always in its init state and nothing a guest
// owns is lost. Every other ptrace request passes through untouched.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#define PTRACE_GETREGSET 0x4204
#define PTRACE_SETREGSET 0x4205
#define NT_X86_XSTATE 0x202
/* far above any XSAVE area the architecture defines today */
#define MAX_XSTATE (64 * 1024)

static long (*real_ptrace)(int, pid_t, void *, void *);
static unsigned char full[MAX_XSTATE] __attribute__((aligned(64)));

long ptrace(int request, ...) {
  va_list ap;
  va_start(ap, request);
  pid_t pid = va_arg(ap, pid_t);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);
  if (!real_ptrace) real_ptrace = (long (*)(int, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");
  if (request != PTRACE_SETREGSET || (uintptr_t)addr != NT_X86_XSTATE || !data) return real_ptrace(request, pid, addr, data);

  struct iovec *given = data;
  /* GETREGSET reports the kernel's full size in iov_len */
  struct iovec now = { full, sizeof full };
  if (real_ptrace(PTRACE_GETREGSET, pid, addr, &now) != 0) return real_ptrace(request, pid, addr, data);
  if (given->iov_len >= now.iov_len) return real_ptrace(request, pid, addr, data);
  memcpy(full, given->iov_base, given->iov_len);
  return real_ptrace(request, pid, addr, &now);
}
