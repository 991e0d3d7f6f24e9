#!/usr/bin/env bash
# Installs what building, cross-testing and booting watchkeeper needs on a Debian 12 host:
# Rust targets, cross linkers, qemu-user (unit tests of the ARM builds) and qemu-system
# (the virtual appliance). Idempotent: a second run finds everything present and only checks.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have aarch64-linux-gnu-gcc || need_apt+=(gcc-aarch64-linux-gnu)
have arm-linux-gnueabihf-gcc || need_apt+=(gcc-arm-linux-gnueabihf)
[ -e /usr/arm-linux-gnueabihf/lib/crt1.o ] || need_apt+=(libc6-dev-armhf-cross)
# The sd-notify scenario's client (tests/system/notify/build-client.sh) is a glibc program.
[ -e /usr/aarch64-linux-gnu/lib/crt1.o ] || need_apt+=(libc6-dev-arm64-cross)
have cpio || need_apt+=(cpio)
have mke2fs || [ -x /sbin/mke2fs ] || need_apt+=(e2fsprogs)
have python3 || need_apt+=(python3)
# The scenarios check each `status --json` against docs/status.schema.json (tests/system/appliance.py).
python3 -c 'import jsonschema' 2>/dev/null || need_apt+=(python3-jsonschema)
# tests/export.rs checks the metrics file with promtool (Debian's prometheus package).
have promtool || need_apt+=(prometheus)
# The Debian appliance (board/qemu/build-debian.sh) and its packages (board/build-deb).
have mmdebstrap || need_apt+=(mmdebstrap)
# mmdebstrap needs it for a foreign architecture (a recommendation, so not pulled in).
have arch-test || need_apt+=(arch-test)
have fakeroot || need_apt+=(fakeroot)
# mmdebstrap's unshare mode maps the user's subordinate ids when it is not root
[ "$(id -u)" -eq 0 ] || have newuidmap || need_apt+=(uidmap)
have dpkg-deb || need_apt+=(dpkg)
# The A/B appliance (tests/system/ab.py): U-Boot for QEMU's virt board and its tools, the
# GPT disk, and RAUC to sign the update bundles (it makes them with mksquashfs).
[ -e /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || need_apt+=(u-boot-qemu)
have mkimage || need_apt+=(u-boot-tools)
have sfdisk || [ -x /sbin/sfdisk ] || need_apt+=(fdisk)
have rauc || need_apt+=(rauc)
have mksquashfs || need_apt+=(squashfs-tools)
have openssl || need_apt+=(openssl)

# The machine's qemu-utils comes from bookworm-backports; the emulators must match it.
need_qemu=()
have qemu-aarch64-static || need_qemu+=(qemu-user-static)
have qemu-system-aarch64 || need_qemu+=(qemu-system-arm)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_qemu[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#need_qemu[@]} -gt 0 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        # Reuse the Debian mirror this machine already uses for bookworm.
        # (either place may be missing: deb822 machines have no sources.list, and grep's
        # exit status 2 for a missing file must not end the script under pipefail)
        mirror=$( { grep -rhoEs '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ || true; } |
            grep -v -- '-security' | head -n 1 | tr -d ' ')
        [ -n "$mirror" ] || { echo "host-setup: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
        echo "deb ${mirror%/} bookworm-backports main" |
            sudo_if_needed tee /etc/apt/sources.list.d/watchkeeper-backports.list >/dev/null
    fi
    sudo_if_needed apt-get update -qq
    if [ ${#need_apt[@]} -gt 0 ]; then
        sudo_if_needed apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        # Only its promtool is wanted: on a host run by systemd the package starts a server.
        if [[ " ${need_apt[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
            sudo_if_needed systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    fi
    if [ ${#need_qemu[@]} -gt 0 ]; then
        sudo_if_needed apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_qemu[@]}" >/dev/null
    fi
fi

installed_targets=$(rustup target list --installed)
for target in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

installed_components=$(rustup component list --installed 2>/dev/null || true)
for component in clippy rustfmt; do
    grep -q "^$component" <<<"$installed_components" || rustup component add "$component"
done

# tests/run runs each test in a process of its own with cargo-nextest: the suites' tests
# mostly wait on timeouts, so several at once take a third of the time, and under
# qemu-user a test process has one test thread, which a fork cannot deadlock against.
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

# Let the kernel run ARM binaries through qemu-user (binfmt_misc), so that tests which
# exec the agent (process tests, repairs) also run for the ARM targets.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    sudo_if_needed mount -t binfmt_misc binfmt_misc "$binfmt"
fi
for arch in aarch64 arm; do
    if [ ! -e "$binfmt/qemu-$arch" ]; then
        sudo_if_needed sh -c "cat /usr/lib/binfmt.d/qemu-$arch.conf > $binfmt/register"
    fi
done
