/** Run a program to its end with its output captured (CLI tests, docs examples, systemd-analyze). */
export async function runToEnd(
  cmd: string[],
  opts: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  const p = Bun.spawn(cmd, { ...opts, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { stdout, stderr, code };
}
