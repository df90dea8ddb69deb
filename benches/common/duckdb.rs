//! DuckDB over the same block files, for the benchmarks that compare with it
//! (DuckDB from PyPI: `pip install duckdb`; not a runtime dependency).

/// DuckDB's median time in ms (`runs` runs after a warm-up) for `sql` over
/// the block `files` (a view `spans`), in a Python process whose start-up is
/// not timed; and the first row of its answer.
pub(crate) fn median_ms(files: &[String], sql: &str, runs: usize) -> (f64, String) {
    let files = files.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ");
    let script = format!(
        r#"
import duckdb, statistics, time
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("""CREATE VIEW spans AS SELECT * FROM read_parquet([{files}])""")
sql = """{sql}"""
answer = con.execute(sql).fetchall()
times = []
for _ in range({runs}):
    t = time.perf_counter()
    con.execute(sql).fetchall()
    times.append((time.perf_counter() - t) * 1000)
print(answer[0] if answer else None)
print(statistics.median(times))
"#
    );
    let output = std::process::Command::new("python3").arg("-c").arg(&script).output().expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.trim().lines();
    let ms = lines.next_back().unwrap_or_default().parse().unwrap_or_else(|_| {
        panic!("duckdb failed (pip install duckdb): {}\n{}", text, String::from_utf8_lossy(&output.stderr))
    });
    (ms, lines.collect::<Vec<_>>().join(" "))
}
