//! The bus QEMU is on: connecting, waiting for QEMU (`org.qemu`), its console objects, and
//! noticing when it leaves.

use futures_util::StreamExt;
use zbus::Fd;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::proxy::CacheProperties;
use zbus::{Connection, names::BusName};

use crate::Error;

/// The name QEMU owns on its bus.
pub const QEMU_NAME: &str = "org.qemu";

#[zbus::proxy(
    interface = "org.qemu.Display1.VM",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/VM"
)]
pub(crate) trait Vm {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property, name = "ConsoleIDs")]
    fn console_ids(&self) -> zbus::Result<Vec<u32>>;
}

#[zbus::proxy(interface = "org.qemu.Display1.Console", default_service = "org.qemu")]
pub(crate) trait Console {
    fn register_listener(&self, listener: Fd<'_>) -> zbus::Result<()>;

    #[zbus(property)]
    fn width(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn height(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn label(&self) -> zbus::Result<String>;

    /// Newer QEMU only (not 7.2).
    #[zbus(property)]
    fn interfaces(&self) -> zbus::Result<Vec<String>>;
}

#[zbus::proxy(interface = "org.qemu.Display1.Keyboard", default_service = "org.qemu")]
pub(crate) trait Keyboard {
    fn press(&self, keycode: u32) -> zbus::Result<()>;
    fn release(&self, keycode: u32) -> zbus::Result<()>;
}

#[zbus::proxy(interface = "org.qemu.Display1.Mouse", default_service = "org.qemu")]
pub(crate) trait Mouse {
    fn press(&self, button: u32) -> zbus::Result<()>;
    fn release(&self, button: u32) -> zbus::Result<()>;
    fn set_abs_position(&self, x: u32, y: u32) -> zbus::Result<()>;
    fn rel_motion(&self, dx: i32, dy: i32) -> zbus::Result<()>;

    #[zbus(property)]
    fn is_absolute(&self) -> zbus::Result<bool>;
}

/// The bus address for log lines.
pub(crate) fn describe(address: Option<&str>) -> String {
    match address {
        Some(a) => a.to_owned(),
        None => match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            Ok(a) if !a.is_empty() => format!("the session bus ({a})"),
            _ => "the session bus".to_owned(),
        },
    }
}

/// Connects to the bus at `address`, or to the session bus.
pub(crate) async fn connect(address: Option<&str>) -> Result<Connection, Error> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::session(),
    };
    builder.build().await.map_err(|source| Error::Connect {
        address: describe(address),
        source,
    })
}

/// Whether `org.qemu` has an owner, and the stream of its owner changes (subscribed first, so
/// no change between the two is missed).
pub(crate) async fn watch_qemu(conn: &Connection) -> zbus::Result<(bool, NameOwnerChangedStream)> {
    let dbus = DBusProxy::new(conn).await?;
    let changes = dbus
        .receive_name_owner_changed_with_args(&[(0, QEMU_NAME)])
        .await?;
    let present = dbus
        .name_has_owner(BusName::try_from(QEMU_NAME).expect("a valid bus name"))
        .await?;
    Ok((present, changes))
}

/// Waits for `org.qemu` to get (`appear`) or lose an owner. Returns false if the stream ended
/// (the bus connection closed).
pub(crate) async fn next_owner_change(changes: &mut NameOwnerChangedStream, appear: bool) -> bool {
    while let Some(signal) = changes.next().await {
        let Ok(args) = signal.args() else { continue };
        if args.new_owner().is_some() == appear {
            return true;
        }
    }
    false
}

/// QEMU's console `index`: its proxies, after checking that QEMU has it.
pub(crate) struct QemuConsole {
    pub console: ConsoleProxy<'static>,
    pub keyboard: KeyboardProxy<'static>,
    pub mouse: MouseProxy<'static>,
    /// QEMU's VM name, if it has one.
    pub vm_name: Option<String>,
}

impl QemuConsole {
    pub async fn open(conn: &Connection, index: u32) -> Result<Self, Error> {
        let vm = VmProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        match vm.console_ids().await {
            Ok(ids) if !ids.contains(&index) => {
                return Err(Error::NoConsole {
                    console: index,
                    available: ids,
                });
            }
            Ok(_) => {}
            // Not fatal: registering on the console says whether it exists.
            Err(e) => spice_shim_core::log::debug(&format!("QEMU's ConsoleIDs: {e}")),
        }
        let vm_name = vm.name().await.ok().filter(|n| !n.is_empty());
        let path = format!("/org/qemu/Display1/Console_{index}");
        let console = ConsoleProxy::builder(conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let keyboard = KeyboardProxy::builder(conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let mouse = MouseProxy::builder(conn).path(path).build().await?;
        Ok(Self {
            console,
            keyboard,
            mouse,
            vm_name,
        })
    }
}
