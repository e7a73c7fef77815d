fn main() {
    // tauri.conf.json sits at the repository root, beside the web page it embeds.
    tauri_build::try_build(tauri_build::Attributes::new().config_path("../tauri.conf.json"))
        .expect("reading ../tauri.conf.json");
}
