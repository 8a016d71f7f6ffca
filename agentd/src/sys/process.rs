//! Starting a check program with `posix_spawn(3)`: the C library's vfork-and-exec, which reports
//! a program that cannot be executed as an error of the call (a pipe inside the C library
//! carries the child's errno), instead of a child that exits 127. std's `process::Command` does
//! the same through more layers (its environment map, its own pipe); this is the one call.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

use nix::errno::Errno;

/// The spawn attributes and file actions, destroyed when dropped.
struct Setup {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Drop for Setup {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `Setup::new` and are destroyed once, here.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

/// `Err` for a non-zero return of a `posix_spawn*` function (they return the errno).
fn check(r: libc::c_int) -> Result<(), Errno> {
    match r {
        0 => Ok(()),
        e => Err(Errno::from_raw(e)),
    }
}

impl Setup {
    /// A process group of its own, an empty signal mask, SIGPIPE at its default (the agent
    /// ignores it, and an ignored signal stays ignored across exec), stdin, stdout and stderr on
    /// `/dev/null`.
    fn new() -> Result<Setup, Errno> {
        let mut attr = MaybeUninit::uninit();
        let mut actions = MaybeUninit::uninit();
        // SAFETY: the init functions initialise the structures they are given.
        check(unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) })?;
        // SAFETY: as above.
        if let Err(e) = check(unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) })
        {
            // SAFETY: `attr` was initialised just above.
            unsafe { libc::posix_spawnattr_destroy(attr.as_mut_ptr()) };
            return Err(e);
        }
        // SAFETY: both were initialised above; from here on `Setup` destroys them.
        let mut s = unsafe {
            Setup {
                attr: attr.assume_init(),
                actions: actions.assume_init(),
            }
        };
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        let null = c"/dev/null".as_ptr();
        let mut empty = MaybeUninit::uninit();
        let mut pipe = MaybeUninit::uninit();
        // SAFETY: every call gets the initialised structures of `s` and valid pointers: the
        // signal sets are initialised by sigemptyset before use, the path is a static C string.
        unsafe {
            check(libc::posix_spawnattr_setflags(
                &mut s.attr,
                flags as libc::c_short,
            ))?;
            check(libc::posix_spawnattr_setpgroup(&mut s.attr, 0))?;
            libc::sigemptyset(empty.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(
                &mut s.attr,
                empty.as_ptr(),
            ))?;
            libc::sigemptyset(pipe.as_mut_ptr());
            libc::sigaddset(pipe.as_mut_ptr(), libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(
                &mut s.attr,
                pipe.as_ptr(),
            ))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut s.actions,
                0,
                null,
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut s.actions,
                1,
                null,
                libc::O_WRONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut s.actions, 1, 2))?;
        }
        Ok(s)
    }
}

/// Starts `path` with `argv` (its first entry the program's name) and the environment `env`
/// (`NAME=value` strings), in a process group of its own whose id is its pid (see [`Setup::new`]
/// for the rest); returns the pid. The program is not searched for: `path` is absolute.
pub fn spawn(path: &CStr, argv: &[CString], env: &[CString]) -> Result<libc::pid_t, Errno> {
    let setup = Setup::new()?;
    let ptrs = |v: &[CString]| -> Vec<*mut libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr().cast_mut())
            .chain([std::ptr::null_mut()])
            .collect()
    };
    let (argv, env) = (ptrs(argv), ptrs(env));
    let mut pid = 0;
    // SAFETY: `path`, every argument and every environment string are NUL-terminated and outlive
    // the call, both pointer arrays end with a null pointer, `setup` holds initialised
    // attributes and file actions, and posix_spawn only reads them (the strings are not written
    // despite the C prototype's `char *const[]`).
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &setup.actions,
            &setup.attr,
            argv.as_ptr(),
            env.as_ptr(),
        )
    })?;
    Ok(pid)
}
