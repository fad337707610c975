//! The control message that passes a descriptor with the preface (SCM_RIGHTS), built as plain
//! data: the caller makes the sendmsg(2) call.

use std::os::fd::RawFd;

/// One descriptor's SCM_RIGHTS control message, aligned for `cmsghdr`.
pub struct PassFd {
    buf: [u64; 4],
}

impl PassFd {
    pub fn new(fd: RawFd) -> PassFd {
        let mut pass = PassFd { buf: [0; 4] };
        assert!(Self::space() <= std::mem::size_of_val(&pass.buf));
        // SAFETY: a msghdr whose control buffer is `pass.buf` (zeroed, aligned for cmsghdr,
        // larger than CMSG_SPACE of one descriptor, checked above); CMSG_FIRSTHDR of it is the
        // start of that buffer, and the header and descriptor are written inside it.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_control = pass.buf.as_mut_ptr().cast();
            msg.msg_controllen = Self::space() as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
        pass
    }

    fn space() -> usize {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize }
    }
}

/// A msghdr for sendmsg(2) of `iov`, passing `pass` if any; both must outlive the call.
pub fn msghdr(iov: &mut libc::iovec, pass: Option<&mut PassFd>) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    if let Some(pass) = pass {
        msg.msg_control = pass.buf.as_mut_ptr().cast();
        msg.msg_controllen = PassFd::space() as _;
    }
    msg
}
