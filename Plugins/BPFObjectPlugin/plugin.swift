import Foundation
import PackagePlugin

/// Compiles bpf/tcptrail.bpf.c (clang -target bpf, CO-RE) into the target
/// as generated Swift source, with the object's program and map names as
/// Swift enums (BPFProgramName, BPFMapName).
@main
struct BPFObjectPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpfDir = context.package.directoryURL.appending(path: "bpf")
        let source = bpfDir.appending(path: "tcptrail.bpf.c")
        // Every header in bpf/, so an edit to any of them rebuilds the object.
        let headers = try FileManager.default.contentsOfDirectory(at: bpfDir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "h" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObject.swift")
        let clang = try context.tool(named: "clang").url
        let embed = try context.tool(named: "bpf-embed").url
        #if arch(arm64)
        let arch = "arm64"
        #else
        let arch = "x86"
        #endif
        let clangArgs = [
            "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_\(arch)",
            "-Wall", "-Werror", "-Wno-unknown-warning-option", "-Wno-default-const-init-var-unsafe",
            "-I", bpfDir.path, "-c", source.path,
        ]
        return [
            .buildCommand(
                displayName: "Compiling BPF object tcptrail.bpf.c",
                executable: embed,
                arguments: [clang.path, output.path, "EmbeddedBPFObject", "--"] + clangArgs,
                inputFiles: [source] + headers,
                outputFiles: [output]
            )
        ]
    }
}
