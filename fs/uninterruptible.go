package fs

import "github.com/hanwen/go-fuse/v2/fuse"

// uninterruptible serves every request to its end, whatever signals the
// caller receives meanwhile. The kernel sends FUSE an INTERRUPT when a
// process blocked in a request gets a signal it handles (a fatal signal
// ends the wait in the kernel without us), and go-fuse then cancels the
// request's context, which would make the request fail with EINTR.
// PostgreSQL's processes handle many signals (SIGUSR1, SIGHUP, SIGALRM,
// SIGTERM), and while it retries read(2) and write(2) on EINTR, it does
// not retry open(2): a checkpointer or startup process opening a file on
// a slow repository then fails with "Interrupted system call", and a
// startup process that fails takes the server down. Each method passes a
// nil channel on, a context that is never cancelled.
type uninterruptible struct {
	fuse.RawFileSystem
}

func (u uninterruptible) Lookup(_ <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return u.RawFileSystem.Lookup(nil, header, name, out)
}

func (u uninterruptible) GetAttr(_ <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	return u.RawFileSystem.GetAttr(nil, input, out)
}

func (u uninterruptible) SetAttr(_ <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return u.RawFileSystem.SetAttr(nil, input, out)
}

func (u uninterruptible) Mknod(_ <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.RawFileSystem.Mknod(nil, input, name, out)
}

func (u uninterruptible) Mkdir(_ <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.RawFileSystem.Mkdir(nil, input, name, out)
}

func (u uninterruptible) Unlink(_ <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return u.RawFileSystem.Unlink(nil, header, name)
}

func (u uninterruptible) Rmdir(_ <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return u.RawFileSystem.Rmdir(nil, header, name)
}

func (u uninterruptible) Rename(_ <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	return u.RawFileSystem.Rename(nil, input, oldName, newName)
}

func (u uninterruptible) Link(_ <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	return u.RawFileSystem.Link(nil, input, filename, out)
}

func (u uninterruptible) Symlink(_ <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	return u.RawFileSystem.Symlink(nil, header, pointedTo, linkName, out)
}

func (u uninterruptible) Readlink(_ <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	return u.RawFileSystem.Readlink(nil, header)
}

func (u uninterruptible) Access(_ <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	return u.RawFileSystem.Access(nil, input)
}

func (u uninterruptible) GetXAttr(_ <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	return u.RawFileSystem.GetXAttr(nil, header, attr, dest)
}

func (u uninterruptible) ListXAttr(_ <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	return u.RawFileSystem.ListXAttr(nil, header, dest)
}

func (u uninterruptible) SetXAttr(_ <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return u.RawFileSystem.SetXAttr(nil, input, attr, data)
}

func (u uninterruptible) RemoveXAttr(_ <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	return u.RawFileSystem.RemoveXAttr(nil, header, attr)
}

func (u uninterruptible) Create(_ <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return u.RawFileSystem.Create(nil, input, name, out)
}

func (u uninterruptible) Tmpfile(_ <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return u.RawFileSystem.Tmpfile(nil, input, out)
}

func (u uninterruptible) Open(_ <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return u.RawFileSystem.Open(nil, input, out)
}

func (u uninterruptible) Read(_ <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	return u.RawFileSystem.Read(nil, input, buf)
}

func (u uninterruptible) Lseek(_ <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return u.RawFileSystem.Lseek(nil, in, out)
}

func (u uninterruptible) GetLk(_ <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	return u.RawFileSystem.GetLk(nil, input, out)
}

func (u uninterruptible) SetLk(_ <-chan struct{}, input *fuse.LkIn) fuse.Status {
	return u.RawFileSystem.SetLk(nil, input)
}

func (u uninterruptible) SetLkw(_ <-chan struct{}, input *fuse.LkIn) fuse.Status {
	return u.RawFileSystem.SetLkw(nil, input)
}

func (u uninterruptible) Release(_ <-chan struct{}, input *fuse.ReleaseIn) {
	u.RawFileSystem.Release(nil, input)
}

func (u uninterruptible) Write(_ <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return u.RawFileSystem.Write(nil, input, data)
}

func (u uninterruptible) Writev(_ <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return u.RawFileSystem.Writev(nil, input, data)
}

func (u uninterruptible) CopyFileRange(_ <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return u.RawFileSystem.CopyFileRange(nil, input)
}

func (u uninterruptible) Ioctl(_ <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	return u.RawFileSystem.Ioctl(nil, input, inbuf, output, outbuf)
}

func (u uninterruptible) Flush(_ <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	return u.RawFileSystem.Flush(nil, input)
}

func (u uninterruptible) Fsync(_ <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	return u.RawFileSystem.Fsync(nil, input)
}

func (u uninterruptible) Fallocate(_ <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	return u.RawFileSystem.Fallocate(nil, input)
}

func (u uninterruptible) OpenDir(_ <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return u.RawFileSystem.OpenDir(nil, input, out)
}

func (u uninterruptible) ReadDir(_ <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return u.RawFileSystem.ReadDir(nil, input, out)
}

func (u uninterruptible) ReadDirPlus(_ <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return u.RawFileSystem.ReadDirPlus(nil, input, out)
}

func (u uninterruptible) FsyncDir(_ <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	return u.RawFileSystem.FsyncDir(nil, input)
}

func (u uninterruptible) StatFs(_ <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return u.RawFileSystem.StatFs(nil, input, out)
}

func (u uninterruptible) Statx(_ <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	return u.RawFileSystem.Statx(nil, input, out)
}
