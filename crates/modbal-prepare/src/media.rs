//! Frames and external tools: listing and checking JPEG frame folders, copying them under the
//! 1-based 5-digit names, and calling `ffmpeg` for videos.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compares file names so that `frame_2.jpg < frame_10.jpg` (digit runs compared as numbers).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = dx
                    .iter()
                    .skip_while(|&&c| c == b'0')
                    .copied()
                    .collect::<Vec<u8>>();
                let ty = dy
                    .iter()
                    .skip_while(|&&c| c == b'0')
                    .copied()
                    .collect::<Vec<u8>>();
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(&ty));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// The JPEG files of a frame folder in natural order; an error if there are none.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read frame folder: {e}"))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                })
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    if v.is_empty() {
        return Err("frame folder holds no .jpg files".into());
    }
    v.sort_by(|a, b| {
        natural_cmp(
            &a.file_name().unwrap().to_string_lossy(),
            &b.file_name().unwrap().to_string_lossy(),
        )
    });
    Ok(v)
}

/// Cheap structural JPEG check: starts with the SOI marker `FF D8 FF` and has the EOI marker
/// `FF D9` within its last 64 bytes (a truncated file lacks it). Pixels are not decoded.
pub fn check_jpeg(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() < 4 || bytes[..3] != [0xFF, 0xD8, 0xFF] {
        return Err("not a JPEG (no SOI marker)".into());
    }
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err("truncated JPEG (no EOI marker at the end)".into());
    }
    Ok(())
}

/// Hard-links (or, across file systems, copies) `frames` into `dst` as `00001.jpg`, `00002.jpg`, ...
pub fn copy_frames(frames: &[PathBuf], dst: &Path) -> Result<(), String> {
    for (i, f) in frames.iter().enumerate() {
        let to = dst.join(format!("{:05}.jpg", i + 1));
        if std::fs::hard_link(f, &to).is_err() {
            std::fs::copy(f, &to).map_err(|e| format!("cannot copy {}: {e}", f.display()))?;
        }
    }
    Ok(())
}

/// `ffmpeg` on PATH, if any.
pub fn find_ffmpeg() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| {
            d.join(if cfg!(windows) {
                "ffmpeg.exe"
            } else {
                "ffmpeg"
            })
        })
        .find(|p| p.is_file())
}

/// First line of `ffmpeg -version`.
pub fn ffmpeg_version(ffmpeg: &Path) -> Option<String> {
    let out = Command::new(ffmpeg).arg("-version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "ffmpeg failed ({}): {}",
            out.status,
            err.trim().lines().last().unwrap_or("")
        ));
    }
    Ok(())
}

/// 1 fps JPEG frames of `video` into `dst` as `00001.jpg`, ... (`-vf fps=1 -q:v 2`).
pub fn extract_frames(ffmpeg: &Path, video: &Path, dst: &Path) -> Result<(), String> {
    run(Command::new(ffmpeg)
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(video)
        .args(["-vf", "fps=1", "-q:v", "2", "-start_number", "1"])
        .arg(dst.join("%05d.jpg")))?;
    list_frames(dst)
        .map(|_| ())
        .map_err(|e| format!("ffmpeg wrote no frames: {e}"))
}

/// The audio track of `video` as 16-bit mono WAV at its own rate.
pub fn extract_audio(ffmpeg: &Path, video: &Path, wav: &Path) -> Result<(), String> {
    run(Command::new(ffmpeg)
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(video)
        .args(["-vn", "-ac", "1", "-acodec", "pcm_s16le", "-f", "wav"])
        .arg(wav))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "frame_10.jpg",
            "frame_2.jpg",
            "frame_1.jpg",
            "frame_00003.jpg",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "frame_1.jpg",
                "frame_2.jpg",
                "frame_00003.jpg",
                "frame_10.jpg"
            ]
        );
    }
}
