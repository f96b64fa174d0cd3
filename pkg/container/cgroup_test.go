package container

import "testing"

func TestParseCgroup(t *testing.T) {
	const id = "3f4c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"
	for _, tt := range []struct {
		name   string
		cgroup string
		id     string
		rt     Runtime
	}{
		{"host v2", "0::/user.slice/user-0.slice/session-1.scope\n", "", RuntimeNone},
		{"host v1", "12:pids:/\n11:memory:/user.slice\n0::/\n", "", RuntimeNone},
		{"not a container id", "4:memory:/process_api/2a3feb263a20473030cf8ba8e7495ee3\n0::/\n", "", RuntimeNone},
		{"docker cgroupfs v1", "12:memory:/docker/" + id + "\n11:cpu,cpuacct:/docker/" + id + "\n0::/\n", id, RuntimeDocker},
		{"docker cgroupfs v2", "0::/docker/" + id + "\n", id, RuntimeDocker},
		{"docker systemd v1", "10:memory:/system.slice/docker-" + id + ".scope\n1:name=systemd:/system.slice/docker-" + id + ".scope\n", id, RuntimeDocker},
		{"docker systemd v2", "0::/system.slice/docker-" + id + ".scope\n", id, RuntimeDocker},
		{"docker hybrid, v2 line empty", "4:memory:/docker/" + id + "\n0::/\n", id, RuntimeDocker},
		{"docker in docker", "0::/docker/" + "0000000000000000000000000000000000000000000000000000000000000000" + "/docker/" + id + "\n", id, RuntimeDocker},
		{"docker compose cgroup-parent", "0::/actions_job/" + id + "\n", id, RuntimeNone},
		{"k8s containerd cgroupfs v1", "11:memory:/kubepods/burstable/pod6c1d7c83-8a2e-4d89-b1b0-2f5e2a3c4d5e/" + id + "\n", id, RuntimeContainerd},
		{"k8s containerd cgroupfs v2", "0::/kubepods/besteffort/pod6c1d7c83-8a2e-4d89-b1b0-2f5e2a3c4d5e/" + id + "\n", id, RuntimeContainerd},
		{"k8s containerd systemd v1", "9:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6c1d7c83_8a2e_4d89_b1b0_2f5e2a3c4d5e.slice/cri-containerd-" + id + ".scope\n", id, RuntimeContainerd},
		{"k8s containerd systemd v2", "0::/kubepods.slice/kubepods-pod6c1d7c83_8a2e.slice/cri-containerd-" + id + ".scope\n", id, RuntimeContainerd},
		{"k8s cri-o systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/crio-" + id + ".scope\n", id, RuntimeCRIO},
		{"k8s cri-o cgroupfs v1", "5:cpu:/kubepods/burstable/pod1234/crio-" + id + "\n", id, RuntimeCRIO},
		{"cri-o conmon is not the container", "0::/kubepods.slice/kubepods-pod1.slice/crio-conmon-" + id + ".scope\n", "", RuntimeNone},
		{"k8s dockershim systemd", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/docker-" + id + ".scope\n", id, RuntimeDocker},
		{"podman", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope/container\n", id, RuntimePodman},
		{"nerdctl", "0::/system.slice/nerdctl-" + id + ".scope\n", id, RuntimeContainerd},
		{"colon in path", "0::/weird:path/docker-" + id + ".scope\n", id, RuntimeDocker},
		{"uppercase is not an id", "0::/docker/" + "3F4C2B1A0E9D8C7B6A5F4E3D2C1B0A9F8E7D6C5B4A3F2E1D0C9B8A7F6E5D4C3B" + "\n", "", RuntimeNone},
		{"garbage", "no colons here\n::\n", "", RuntimeNone},
		{"empty", "", "", RuntimeNone},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, rt := ParseCgroup([]byte(tt.cgroup))
			if id != tt.id || rt != tt.rt {
				t.Errorf("ParseCgroup(%q) = %q, %q; want %q, %q", tt.cgroup, id, rt, tt.id, tt.rt)
			}
		})
	}
}
