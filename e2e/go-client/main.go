// sysbox-mgr-go-client: a test client of sysbox-mgr-ts in Go, with the grpc-go Debian ships
// (1.33), dialing the gateway the way sysbox-ipc's client (sysboxMgrGrpc/grpcClient.go) does
// and calling it in sysbox-runc's order for one container. Written for the e2e suite; the
// gRPC code is generated at build time from apps/gateway/proto/sysboxMgr.proto (build.sh).
//
//	sysbox-mgr-go-client lifecycle -socket S -id ID -rootfs R [-upper DIR] [-authority localhost] [-bind SRC:DEST]... [-hold-after CALL]
//	sysbox-mgr-go-client authority -socket S [-authority localhost]
//
// `lifecycle` prints a JSON summary on stdout and exits 1 with the failing call named when any
// call fails; with -hold-after it stops after that call, says `held after CALL` on stderr and
// goes on when it gets SIGUSR1 (the test checks the host meanwhile). `authority` listens on S
// itself, dials it as `lifecycle` would and prints the HTTP/2 :authority the client sent (what
// Node's http2 sees on the gateway's socket).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	pb "sysboxmgrpb"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
)

// What sysbox-ipc's client waits for each call (grpcTimeout since 2023-02; 40 s before).
// ReqMounts has no deadline there: it only cancels when the caller returns.
const callTimeout = 10 * time.Minute

// runc's IdRangeMin: the subid range sysbox-runc asks for.
const subidRange = 65536

// sysbox-libs' idShiftUtils.IDShiftType: the two modes this client drives.
const (
	shiftIDMapped = 2
	shiftChown    = 4
)

// The dirs sysbox-runc backs with sysbox-mgr volumes (libsysbox/syscont getSpecialDirs), by
// the kind number sysbox-ipc's MntKind gives each.
var specialDirs = []struct {
	kind uint32
	dest string
}{
	{0, "/var/lib/docker"},
	{1, "/var/lib/kubelet"},
	{2, "/var/lib/k0s"},
	{3, "/var/lib/rancher/k3s"},
	{4, "/var/lib/rancher/rke2"},
	{5, "/var/lib/buildkit"},
	{6, "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"},
}

type dialOptions struct {
	socket    string
	authority string
}

// dial opens one connection for one call, as sysbox-ipc's connect() does: the socket path is
// the dial target, a dialer that ignores the resolver and connects the unix socket, no TLS.
// grpc-go < 1.57 then sends the target, the path, as :authority; `authority` overrides it
// (grpc.WithAuthority) with what newer builds send instead, e.g. "localhost".
func dial(o dialOptions) (*grpc.ClientConn, error) {
	unixDialer := func(addr string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout("unix", o.socket, timeout)
	}
	opts := []grpc.DialOption{grpc.WithInsecure(), grpc.WithDialer(unixDialer)}
	if o.authority != "" {
		opts = append(opts, grpc.WithAuthority(o.authority))
	}
	return grpc.Dial(o.socket, opts...)
}

type callRecord struct {
	Method string  `json:"method"`
	Ms     float64 `json:"ms"`
}

type mount struct {
	Source string   `json:"source"`
	Dest   string   `json:"dest"`
	Type   string   `json:"type"`
	Opt    []string `json:"opt"`
}

type summary struct {
	OK          bool                `json:"ok"`
	Error       string              `json:"error,omitempty"`
	FailedCall  string              `json:"failedCall,omitempty"`
	GoVersion   string              `json:"goVersion"`
	GrpcVersion string              `json:"grpcVersion"`
	Authority   string              `json:"authority"`
	ID          string              `json:"id"`
	Config      *pb.ContainerConfig `json:"containerConfig,omitempty"`
	ShiftType   uint32              `json:"rootfsUidShiftType"`
	UID         uint32              `json:"uid"`
	GID         uint32              `json:"gid"`
	Rootfs      string              `json:"rootfs"`
	Prepared    []string            `json:"prepared"`
	Mounts      []mount             `json:"mounts"`
	FsEntries   []string            `json:"fsEntries"`
	Calls       []callRecord        `json:"calls"`
}

// client makes each call on a connection of its own and records it in the summary.
type client struct {
	dial dialOptions
	sum  *summary
	// After this call succeeds, wait for a value on resume.
	holdAfter string
	resume    chan os.Signal
}

type callError struct {
	method string
	err    error
}

func (e *callError) Error() string { return fmt.Sprintf("%s failed: %v", e.method, e.err) }

func (c *client) call(method string, deadline bool, fn func(context.Context, pb.SysboxMgrStateChannelClient) error) error {
	conn, err := dial(c.dial)
	if err != nil {
		return &callError{method, fmt.Errorf("failed to connect with sysbox-mgr: %w", err)}
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if deadline {
		ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	}
	defer cancel()
	start := time.Now()
	err = fn(ctx, pb.NewSysboxMgrStateChannelClient(conn))
	c.sum.Calls = append(c.sum.Calls, callRecord{method, float64(time.Since(start).Microseconds()) / 1000})
	if err != nil {
		return &callError{method, err}
	}
	if method == c.holdAfter {
		fmt.Fprintf(os.Stderr, "held after %s\n", method)
		<-c.resume
	}
	return nil
}

type bind struct{ source, dest string }

type bindList []bind

func (b *bindList) String() string { return fmt.Sprint(*b) }
func (b *bindList) Set(v string) error {
	i := strings.LastIndex(v, ":")
	if i <= 0 || i == len(v)-1 {
		return fmt.Errorf("want SOURCE:DEST, got %q", v)
	}
	*b = append(*b, bind{v[:i], v[i+1:]})
	return nil
}

// shiftUpper is what sysbox-runc's rootfs init does to an overlayfs rootfs in ID-mapped mode
// (overlayfs cannot ID-map its upper layer): every entry's owner shifted by the offset, links
// not followed. A runtime's work, not a manager call; Update then records it.
func shiftUpper(dir string, uid, gid uint32) error {
	return filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", path)
		}
		return os.Lchown(path, int(st.Uid+uid), int(st.Gid+gid))
	})
}

// lifecycle drives one container as sysbox-runc does: `create` (run.go/create.go: Register;
// ConvertSpec: SubidAlloc, ReqCloneRootfs in chown mode, PrepMounts for host binds over
// special dirs, ReqMounts for the others; createContainer: ReqFsState), `start`
// (ChownClonedRootfs before the init process runs, or the upper-layer chown in ID-mapped mode;
// Update once it runs), `pause`, `resume`, and Destroy on stop (RevertClonedRootfsChown,
// Unregister). The mode follows Register's answer, as runc's CheckUidShifting does for an
// overlayfs rootfs without metacopy.
func lifecycle(c *client, id, rootfs, upper string, binds bindList) error {
	s := c.sum
	err := c.call("Register", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
		// Docker without userns-remap: no namespace paths, no mappings in the spec.
		resp, err := ch.Register(ctx, &pb.RegisterReq{Id: id, Rootfs: rootfs, UidMappings: []*pb.IDMapping{}, GidMappings: []*pb.IDMapping{}})
		if err == nil {
			s.Config = resp.GetContainerConfig()
		}
		return err
	})
	if err != nil {
		return err
	}
	cfg := s.Config
	switch {
	case cfg.GetIDMapMountOk() && cfg.GetOverlayfsOnIDMapMountOk():
		if upper == "" {
			return errors.New("ID-mapped mode: give the rootfs' upper dir (-upper), which sysbox-runc chowns")
		}
		s.ShiftType = shiftIDMapped
	case cfg.GetShiftfsOk() && cfg.GetShiftfsOnOverlayfsOk():
		return errors.New("the gateway offers shiftfs; this client drives ID-mapped and chown modes only")
	default:
		s.ShiftType = shiftChown
	}

	err = c.call("SubidAlloc", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
		resp, err := ch.SubidAlloc(ctx, &pb.SubidAllocReq{Id: id, Size: subidRange})
		if err == nil {
			s.UID, s.GID = resp.GetUid(), resp.GetGid()
		}
		return err
	})
	if err != nil {
		return err
	}

	// The rootfs is overlayfs without metacopy (the test's Docker-style layers), so sysbox-runc
	// asks for a clone unless the manager says not to.
	s.Rootfs = rootfs
	cloned := false
	if s.ShiftType == shiftChown && !cfg.GetNoRootfsCloning() {
		err = c.call("ReqCloneRootfs", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			resp, err := ch.ReqCloneRootfs(ctx, &pb.CloneRootfsReq{Id: id})
			if err == nil {
				s.Rootfs, cloned = resp.GetRootfs(), true
			}
			return err
		})
		if err != nil {
			return err
		}
	}

	bound := map[string]bool{}
	prepList := []*pb.MountPrepInfo{}
	for i := len(binds) - 1; i >= 0; i-- {
		for _, d := range specialDirs {
			if d.dest == binds[i].dest && !bound[d.dest] {
				bound[d.dest] = true
				prepList = append(prepList, &pb.MountPrepInfo{Source: binds[i].source, Exclusive: true})
				s.Prepared = append(s.Prepared, binds[i].source)
			}
		}
	}
	if len(prepList) > 0 {
		err = c.call("PrepMounts", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			_, err := ch.PrepMounts(ctx, &pb.MountPrepReq{Id: id, Uid: s.UID, Gid: s.GID, PrepList: prepList})
			return err
		})
		if err != nil {
			return err
		}
	}

	if cfg.GetSyscontMode() {
		reqList := []*pb.MountReqInfo{}
		for _, d := range specialDirs {
			if !bound[d.dest] {
				reqList = append(reqList, &pb.MountReqInfo{Kind: d.kind, Dest: d.dest})
			}
		}
		err = c.call("ReqMounts", false, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			resp, err := ch.ReqMounts(ctx, &pb.MountReq{Id: id, RootfsUidShiftType: s.ShiftType, ReqList: reqList})
			for _, m := range resp.GetMounts() {
				s.Mounts = append(s.Mounts, mount{m.GetSource(), m.GetDest(), m.GetType(), m.GetOpt()})
			}
			return err
		})
		if err != nil {
			return err
		}
	}

	err = c.call("ReqFsState", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
		resp, err := ch.ReqFsState(ctx, &pb.FsStateReq{Id: id, Rootfs: s.Rootfs})
		for _, e := range resp.GetFsEntries() {
			s.FsEntries = append(s.FsEntries, e.GetPath())
		}
		sort.Strings(s.FsEntries)
		return err
	})
	if err != nil {
		return err
	}

	if cloned {
		err = c.call("ChownClonedRootfs", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			_, err := ch.ChownClonedRootfs(ctx, &pb.ChownClonedRootfsReq{Id: id, UidOffset: int32(s.UID), GidOffset: int32(s.GID)})
			return err
		})
		if err != nil {
			return err
		}
	}

	if s.ShiftType == shiftIDMapped {
		if err := shiftUpper(upper, s.UID, s.GID); err != nil {
			return fmt.Errorf("the upper-layer chown sysbox-runc makes: %w", err)
		}
	}

	err = c.call("Update", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
		_, err := ch.Update(ctx, &pb.UpdateReq{
			Id:                 id,
			UidMappings:        []*pb.IDMapping{{ContainerID: 0, HostID: s.UID, Size: subidRange}},
			GidMappings:        []*pb.IDMapping{{ContainerID: 0, HostID: s.GID, Size: subidRange}},
			RootfsUidShiftType: s.ShiftType,
		})
		return err
	})
	if err != nil {
		return err
	}

	for _, step := range []string{"Pause", "Resume"} {
		err = c.call(step, true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			var err error
			if step == "Pause" {
				_, err = ch.Pause(ctx, &pb.PauseReq{Id: id})
			} else {
				_, err = ch.Resume(ctx, &pb.ResumeReq{Id: id})
			}
			return err
		})
		if err != nil {
			return err
		}
	}

	if cloned {
		err = c.call("RevertClonedRootfsChown", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			_, err := ch.RevertClonedRootfsChown(ctx, &pb.RevertClonedRootfsChownReq{Id: id})
			return err
		})
		if err != nil {
			return err
		}
	}
	return c.call("Unregister", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
		_, err := ch.Unregister(ctx, &pb.UnregisterReq{Id: id})
		return err
	})
}

// sentAuthority serves the first connection on `socket` far enough to read the client's first
// HEADERS frame (server SETTINGS, then frames until the headers), and answers its :authority.
func sentAuthority(o dialOptions) (string, error) {
	ln, err := net.Listen("unix", o.socket)
	if err != nil {
		return "", err
	}
	defer ln.Close()
	got := make(chan string, 1)
	failed := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			failed <- err
			return
		}
		defer conn.Close()
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
			failed <- fmt.Errorf("no HTTP/2 client preface (%q, %v)", preface, err)
			return
		}
		fr := http2.NewFramer(conn, conn)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		if err := fr.WriteSettings(); err != nil {
			failed <- err
			return
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				failed <- err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				got <- f.PseudoValue("authority")
				_ = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
				return
			}
		}
	}()
	// The call fails (the stream is refused); what matters is what it sent.
	c := &client{dial: o, sum: &summary{}}
	callDone := make(chan error, 1)
	go func() {
		callDone <- c.call("Pause", true, func(ctx context.Context, ch pb.SysboxMgrStateChannelClient) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := ch.Pause(ctx, &pb.PauseReq{Id: "authority-probe"})
			return err
		})
	}()
	select {
	case a := <-got:
		return a, nil
	case err := <-failed:
		return "", err
	case err := <-callDone:
		return "", fmt.Errorf("the call ended before its headers were read: %v", err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sysbox-mgr-go-client lifecycle -socket S -id ID -rootfs R [-upper DIR] [-authority A] [-bind SRC:DEST]... [-hold-after CALL]")
	fmt.Fprintln(os.Stderr, "       sysbox-mgr-go-client authority -socket S [-authority A]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	socket := fs.String("socket", "", "the gateway's unix socket (the dial target)")
	authority := fs.String("authority", "", "override :authority (grpc.WithAuthority); default: grpc-go's own, the target")
	id := fs.String("id", "", "container id")
	rootfs := fs.String("rootfs", "", "the container's rootfs (its mounted overlay)")
	upper := fs.String("upper", "", "the rootfs overlay's upper dir (chowned as sysbox-runc does in ID-mapped mode)")
	var binds bindList
	fs.Var(&binds, "bind", "a host bind mount SOURCE:DEST in the container's spec (repeatable)")
	holdAfter := fs.String("hold-after", "", "after this call succeeds, say so on stderr and wait for SIGUSR1")
	_ = fs.Parse(os.Args[2:])
	if *socket == "" {
		usage()
	}
	o := dialOptions{socket: *socket, authority: *authority}
	out := json.NewEncoder(os.Stdout)

	switch os.Args[1] {
	case "authority":
		a, err := sentAuthority(o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sysbox-mgr-go-client: authority probe failed: %v\n", err)
			os.Exit(1)
		}
		_ = out.Encode(map[string]string{"authority": a, "grpcVersion": grpc.Version})
	case "lifecycle":
		if *id == "" || *rootfs == "" {
			usage()
		}
		shown := *authority
		if shown == "" {
			shown = "(grpc-go default: the dial target)"
		}
		s := &summary{GoVersion: runtime.Version(), GrpcVersion: grpc.Version, Authority: shown, ID: *id, Calls: []callRecord{}}
		c := &client{dial: o, sum: s, holdAfter: *holdAfter, resume: make(chan os.Signal, 1)}
		signal.Notify(c.resume, syscall.SIGUSR1)
		err := lifecycle(c, *id, *rootfs, *upper, binds)
		s.OK = err == nil
		if err != nil {
			s.Error = err.Error()
			var ce *callError
			if errors.As(err, &ce) {
				s.FailedCall = ce.method
			}
		}
		_ = out.Encode(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sysbox-mgr-go-client: container %s: %v\n", *id, err)
			os.Exit(1)
		}
	default:
		usage()
	}
}
