//! The test guest's pointer: a 32x32 arrow (white body, one-pixel black outline, transparent
//! background, hot spot at the tip, (0,0)) and the path it moves along.

/// Width and height of the arrow.
pub const ARROW_SIZE: u32 = 32;
/// Body colour, ARGB8888.
pub const ARROW_BODY: u32 = 0xFFFF_FFFF;
/// Outline colour, ARGB8888.
pub const ARROW_OUTLINE: u32 = 0xFF00_0000;

/// The arrow's outline as a polygon in pixel units, tip first.
const POLYGON: [(f32, f32); 7] = [
    (0.0, 0.0),
    (0.0, 25.0),
    (6.5, 19.0),
    (11.0, 29.5),
    (15.0, 28.0),
    (10.5, 17.5),
    (18.0, 17.5),
];

fn inside(px: f32, py: f32) -> bool {
    let mut inside = false;
    let mut prev = POLYGON[POLYGON.len() - 1];
    for &(xi, yi) in &POLYGON {
        let (xj, yj) = prev;
        if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        prev = (xi, yi);
    }
    inside
}

/// The arrow as ARGB8888 words (straight alpha), rows of [`ARROW_SIZE`] pixels: body pixels
/// are [`ARROW_BODY`], body pixels next to the outside are [`ARROW_OUTLINE`], the rest is fully
/// transparent (0).
pub fn arrow() -> Vec<u32> {
    let n = ARROW_SIZE as i32;
    let body = |x: i32, y: i32| -> bool {
        (0..n).contains(&x) && (0..n).contains(&y) && inside(x as f32 + 0.5, y as f32 + 0.5)
    };
    let mut out = Vec::with_capacity((n * n) as usize);
    for y in 0..n {
        for x in 0..n {
            let px = if !body(x, y) {
                0
            } else if [(-1, 0), (1, 0), (0, -1), (0, 1)]
                .iter()
                .any(|(dx, dy)| !body(x + dx, y + dy))
            {
                ARROW_OUTLINE
            } else {
                ARROW_BODY
            };
            out.push(px);
        }
    }
    out
}

/// Where the pointer is at `frame` on a `width`x`height` screen: once round an ellipse about
/// the centre every 240 frames (8 s at 30 fps), at least 16 pixels from every edge.
pub fn pointer_path(frame: u64, width: u32, height: u32) -> (i32, i32) {
    let t = (frame % 240) as f64 / 240.0 * std::f64::consts::TAU;
    let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
    let (rx, ry) = ((cx - 48.0).max(0.0), (cy - 48.0).max(0.0));
    ((cx + rx * t.cos()) as i32, (cy + ry * t.sin()) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_has_body_outline_and_transparent_background() {
        let a = arrow();
        assert_eq!(a.len(), (ARROW_SIZE * ARROW_SIZE) as usize);
        let count = |c: u32| a.iter().filter(|&&p| p == c).count();
        assert!(count(ARROW_BODY) > 100, "body {}", count(ARROW_BODY));
        assert!(
            count(ARROW_OUTLINE) > 50,
            "outline {}",
            count(ARROW_OUTLINE)
        );
        assert!(count(0) > 500, "background {}", count(0));
        assert_eq!(count(0) + count(ARROW_BODY) + count(ARROW_OUTLINE), a.len());
        // The tip is the hot spot: drawn, and the far corner is empty.
        assert_ne!(a[0], 0);
        assert_eq!(a[a.len() - 1], 0);
        // The outline surrounds the body: no body pixel touches the background.
        let at = |x: i32, y: i32| -> u32 {
            if (0..32).contains(&x) && (0..32).contains(&y) {
                a[(y * 32 + x) as usize]
            } else {
                0
            }
        };
        for y in 0..32 {
            for x in 0..32 {
                if at(x, y) == ARROW_BODY {
                    for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                        assert_ne!(at(x + dx, y + dy), 0, "body at {x},{y} touches background");
                    }
                }
            }
        }
    }

    #[test]
    fn the_path_stays_on_screen_and_moves() {
        let mut seen = std::collections::HashSet::new();
        for f in 0..240 {
            let (x, y) = pointer_path(f, 1280, 720);
            assert!((16..1264).contains(&x) && (16..704).contains(&y), "{x},{y}");
            seen.insert((x, y));
        }
        assert!(seen.len() > 200);
    }
}
