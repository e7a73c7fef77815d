//! A virtual display seen the way a window manager and a person see it, through the X
//! protocol: a window closed with its close button (the `WM_DELETE_WINDOW` message a
//! window manager sends; Xvfb runs none), and the pixels a window shows.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, ImageFormat, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

/// A window's picture: `width` × `height` grey levels, row by row.
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub grey: Vec<u8>,
}

impl Picture {
    /// The text of the one QR code shown, if exactly one shows and decodes.
    pub fn qr(&self) -> Option<String> {
        let w = self.width;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, self.height, |x, y| {
            self.grey[y * w + x]
        });
        match img.detect_grids().as_slice() {
            [grid] => grid.decode().ok().map(|(_, text)| text),
            _ => None,
        }
    }
}

fn connect(display: &str) -> (RustConnection, Window) {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connecting to the X display");
    let root = conn.setup().roots[screen].root;
    (conn, root)
}

/// The mapped windows titled `title`, at any depth.
fn shown_titled(conn: &RustConnection, root: Window, title: &str) -> Vec<Window> {
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(window) = todo.pop() {
        let Ok(tree) = conn.query_tree(window).unwrap().reply() else {
            continue; // gone meanwhile
        };
        todo.extend(&tree.children);
        let name = conn
            .get_property(false, window, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 256)
            .unwrap()
            .reply();
        let mapped = conn
            .get_window_attributes(window)
            .unwrap()
            .reply()
            .is_ok_and(|a| a.map_state == MapState::VIEWABLE);
        if mapped && name.is_ok_and(|n| n.value == title.as_bytes()) {
            found.push(window);
        }
    }
    found
}

/// Clicks the close button of every shown window titled `title`, as a window manager
/// does: how many were shown, and asked to close.
pub fn close(display: &str, title: &str) -> usize {
    let (conn, root) = connect(display);
    let atom = |name: &str| {
        conn.intern_atom(false, name.as_bytes())
            .unwrap()
            .reply()
            .unwrap()
            .atom
    };
    let (protocols, delete) = (atom("WM_PROTOCOLS"), atom("WM_DELETE_WINDOW"));
    let windows = shown_titled(&conn, root, title);
    for &window in &windows {
        let event = ClientMessageEvent::new(32, window, protocols, [delete, 0, 0, 0, 0]);
        conn.send_event(false, window, EventMask::NO_EVENT, event)
            .unwrap();
    }
    conn.flush().unwrap();
    windows.len()
}

/// What the first shown window titled `title` shows, if one is shown.
pub fn picture(display: &str, title: &str) -> Option<Picture> {
    let (conn, root) = connect(display);
    let window = *shown_titled(&conn, root, title).first()?;
    let geometry = conn.get_geometry(window).unwrap().reply().ok()?;
    let (width, height) = (geometry.width, geometry.height);
    let image = conn
        .get_image(ImageFormat::Z_PIXMAP, window, 0, 0, width, height, !0)
        .unwrap()
        .reply()
        .ok()?;
    // A 24-bit visual: 4 bytes a pixel, blue green red unused.
    let grey = image
        .data
        .chunks_exact(4)
        .map(|px| ((px[0] as u32 + px[1] as u32 + px[2] as u32) / 3) as u8)
        .collect();
    Some(Picture {
        width: width as usize,
        height: height as usize,
        grey,
    })
}
