#!/bin/bash
# shellcheck disable=SC2154 # initdir, systemdsystemunitdir: set by dracut
# dracut module: the impermanence wipe (units/impermanence-wipe.service running
# /usr/lib/impermanence/impermanence-wipe; for method = "tmpfs", impermanence-tmpfs-root.service
# running /usr/lib/impermanence/impermanence-tmpfs-root), with the [wipe] settings baked in as
# /etc/impermanence/wipe.conf. Included whenever the config declares [wipe]; an invalid config
# stops the build rather than make an initrd that silently does not wipe.

check() {
    [ -x /usr/lib/impermanence/impermanence-wipe ] || return 1
    impermanencectl wipe config >/dev/null 2>&1
    case $? in
        0) return 0 ;;
        3) return 255 ;;  # no [wipe]: only if asked for
        *) return 0 ;;    # invalid: install() says why and fails the build
    esac
}

# The filesystem's own dracut module brings its tool and kernel module: btrfs, or zfs (zfs-dracut,
# whose zfs-import.target the unit runs after).
depends() {
    case $(impermanencectl wipe config 2>/dev/null | sed -n 's/^WIPE_METHOD=//p') in
        zfs) echo systemd zfs ;;
        btrfs) echo systemd btrfs ;;
        *) echo systemd ;;
    esac
    return 0
}

install() {
    local conf rc
    conf=$(impermanencectl wipe config)
    rc=$?
    if [ "$rc" -eq 3 ]; then
        dwarning "impermanence: no [wipe] in the config: the initrd will not wipe the root"
        return 0
    fi
    if [ "$rc" -ne 0 ]; then
        derror "impermanence: the config is invalid (impermanencectl check says why): not building an initrd that would not wipe"
        return 1
    fi
    mkdir -p "$initdir/etc/impermanence"
    printf '%s\n' "$conf" > "$initdir/etc/impermanence/wipe.conf"
    if printf '%s\n' "$conf" | grep -qx 'WIPE_METHOD=tmpfs'; then
        inst_simple /usr/lib/impermanence/impermanence-tmpfs-root /usr/lib/impermanence/impermanence-tmpfs-root
        inst_simple /usr/lib/impermanence/impermanence-lib.sh /usr/lib/impermanence/impermanence-lib.sh
        inst_multiple mount umount stat cp chmod chown mkdir rmdir rm cat
        inst_simple /usr/lib/impermanence/impermanence-tmpfs-root.service "$systemdsystemunitdir/impermanence-tmpfs-root.service"
        mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.wants"
        ln_r "$systemdsystemunitdir/impermanence-tmpfs-root.service" "$systemdsystemunitdir/initrd-root-fs.target.wants/impermanence-tmpfs-root.service"
        return 0
    fi
    inst_simple /usr/lib/impermanence/impermanence-wipe /usr/lib/impermanence/impermanence-wipe
    inst_simple /usr/lib/impermanence/impermanence-lib.sh /usr/lib/impermanence/impermanence-lib.sh
    inst_multiple blkid mount umount stat date awk sort cut tr dd mv rm mkdir rmdir cat sleep grep
    case $conf in *WIPE_METHOD=btrfs*) inst_multiple btrfs ;; *WIPE_METHOD=zfs*) inst_multiple zfs ;; esac
    inst_simple /usr/lib/impermanence/impermanence-wipe.service "$systemdsystemunitdir/impermanence-wipe.service"
    mkdir -p "$initdir$systemdsystemunitdir/initrd.target.wants"
    ln_r "$systemdsystemunitdir/impermanence-wipe.service" "$systemdsystemunitdir/initrd.target.wants/impermanence-wipe.service"
}
