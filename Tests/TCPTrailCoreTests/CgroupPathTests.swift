import Testing
@testable import TCPTrailCore

/// What a cgroup v2 path says: shapes as systemd, Docker, containerd, CRI-O,
/// podman and the kubelet (both cgroup drivers) make them.
@Suite struct CgroupPathTests {
    static let docker = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
    static let other = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"

    struct Shape: Sendable, CustomTestStringConvertible {
        var path: String
        var unit: String?
        var container: String?
        var pod: String?
        var testDescription: String { path }
    }

    static let shapes: [Shape] = [
        Shape(path: "/system.slice/nginx.service", unit: "nginx.service"),
        Shape(path: "/user.slice/user-1000.slice/session-3.scope", unit: "session-3.scope"),
        Shape(path: "/", unit: nil),
        Shape(path: "/init.scope", unit: "init.scope"),
        Shape(path: "/system.slice", unit: nil),
        // A user manager's own units: the deepest unit is the one the process runs in.
        Shape(path: "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4321.scope",
              unit: "app-gnome-firefox-4321.scope"),
        Shape(path: "/user.slice/user-1000.slice/user@1000.service/init.scope", unit: "init.scope"),
        // A service that made sub-cgroups of its own (Delegate=yes).
        Shape(path: "/system.slice/containerd.service/payload", unit: "containerd.service"),
        Shape(path: "/system.slice/systemd-nspawn@web.service/payload", unit: "systemd-nspawn@web.service"),
        // Docker, systemd driver, and cgroupfs driver.
        Shape(path: "/system.slice/docker-\(docker).scope", unit: "docker-\(docker).scope", container: docker),
        Shape(path: "/docker/\(docker)", unit: nil, container: docker),
        // A container running systemd: its own unit inside the container's scope.
        Shape(path: "/system.slice/docker-\(docker).scope/system.slice/nginx.service", unit: "nginx.service", container: docker),
        // podman, rootful and rootless; its conmon is not the container.
        Shape(path: "/machine.slice/libpod-\(docker).scope", unit: "libpod-\(docker).scope", container: docker),
        Shape(path: "/machine.slice/libpod-\(docker).scope/container", unit: "libpod-\(docker).scope", container: docker),
        Shape(path: "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-\(docker).scope",
              unit: "libpod-\(docker).scope", container: docker),
        Shape(path: "/machine.slice/libpod-conmon-\(docker).scope", unit: "libpod-conmon-\(docker).scope"),
        // Kubernetes, systemd driver: containerd, CRI-O, dockershim.
        Shape(path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6c3a7f2e_1b9d_4c8e_9f0a_2d5b7e8c1a34.slice/cri-containerd-\(docker).scope",
              unit: "cri-containerd-\(docker).scope", container: docker, pod: "6c3a7f2e-1b9d-4c8e-9f0a-2d5b7e8c1a34"),
        Shape(path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8695_a4b3c2d1e0f9.slice/crio-\(other).scope",
              unit: "crio-\(other).scope", container: other, pod: "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"),
        Shape(path: "/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8695_a4b3c2d1e0f9.slice/docker-\(other).scope",
              unit: "docker-\(other).scope", container: other, pod: "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"),
        Shape(path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6c3a7f2e_1b9d_4c8e_9f0a_2d5b7e8c1a34.slice/crio-conmon-\(docker).scope",
              unit: "crio-conmon-\(docker).scope", pod: "6c3a7f2e-1b9d-4c8e-9f0a-2d5b7e8c1a34"),
        // Kubernetes, cgroupfs driver (k3s, older kubelets).
        Shape(path: "/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/\(other)",
              container: other, pod: "74c13223-5a00-11e9-b385-42010a80018d"),
        Shape(path: "/kubepods/pod74c13223-5a00-11e9-b385-42010a80018d/\(other)",
              container: other, pod: "74c13223-5a00-11e9-b385-42010a80018d"),
        // Not containers: a 63-hex name, upper case, a "pod" outside kubepods.
        Shape(path: "/docker/\(docker.dropLast())"),
        Shape(path: "/docker/\(docker.uppercased())"),
        Shape(path: "/system.slice/pod74c13223-5a00-11e9-b385-42010a80018d.service", unit: "pod74c13223-5a00-11e9-b385-42010a80018d.service"),
        // A unit name alone is not a unit.
        Shape(path: "/system.slice/.service"),
    ]

    @Test(arguments: shapes) func aPathNamesItsUnitContainerAndPod(_ shape: Shape) {
        let info = CgroupInfo(path: shape.path)
        #expect(info.unit == shape.unit)
        #expect(info.container == shape.container)
        #expect(info.pod == shape.pod)
    }

    @Test func aDockerScopeYieldsItsContainerID() {
        let info = CgroupInfo(path: "/system.slice/docker-\(Self.docker).scope")
        #expect(info.container == Self.docker)
        #expect(info.unit == "docker-\(Self.docker).scope")
    }

    @Test func kubepodsYieldsThePodUID() {
        let info = CgroupInfo(path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6c3a7f2e_1b9d_4c8e_9f0a_2d5b7e8c1a34.slice")
        #expect(info.pod == "6c3a7f2e-1b9d-4c8e-9f0a-2d5b7e8c1a34")
        #expect(info.container == nil && info.unit == nil)
    }

    @Test func procCgroupsUnifiedLine() {
        let hybrid = "12:pids:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n0::/system.slice/nginx.service\n"
        #expect(CgroupInfo.unifiedPath(procCgroup: hybrid) == "/system.slice/nginx.service")
        #expect(CgroupInfo.unifiedPath(procCgroup: "0::/\n") == "/")
        #expect(CgroupInfo.unifiedPath(procCgroup: "0::/tt.slice/gone.service (deleted)\n") == "/tt.slice/gone.service")
        #expect(CgroupInfo.unifiedPath(procCgroup: "4:memory:/x\n") == nil)
    }

    @Test func normalizedPathsAndAncestry() {
        #expect(CgroupInfo.normalized("system.slice//nginx.service/") == "/system.slice/nginx.service")
        #expect(CgroupInfo.normalized("/") == "/")
        #expect(CgroupInfo.normalized("/a/../b") == nil)
        let info = CgroupInfo(path: "/tt-test.slice/tt-test-1.service")
        #expect(info.isWithin("/tt-test.slice") && info.isWithin("/tt-test.slice/tt-test-1.service") && info.isWithin("/"))
        #expect(!info.isWithin("/tt-test.sl") && !info.isWithin("/tt-test.slice/tt-test-1.service/x"))
    }

    @Test func theFilterKeepsACgroupAndWhatIsBelowIt() {
        var f = EventFilter()
        f.cgroups = ["/tt-test.slice"]
        #expect(f.keepsCgroup(CgroupNames.intern(path: "/tt-test.slice/tt-test-1.service")))
        #expect(!f.keepsCgroup(CgroupNames.intern(path: "/tt-test.slicex/a.service")))
        #expect(!f.keepsCgroup(.unknown))
        #expect(CgroupNames.intern(path: "/a.service") == CgroupNames.intern(path: "/a.service"))
    }
}
