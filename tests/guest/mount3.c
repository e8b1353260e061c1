/*
 * mount3: a minimal mount(2) front end for the test guest.
 *
 * Debian's busybox cannot mount NFS (its mount would need the userspace
 * mount.nfs helper to turn a host name into addr= and so on).  The kernel NFS
 * client accepts a plain text option string, so this program just hands the
 * caller's string to mount(2):
 *
 *   mount3 [-t FSTYPE] [-r] SOURCE TARGET [OPTIONS]
 *   mount3 -u TARGET            (umount2(TARGET, 0))
 *   mount3 -U TARGET            (umount2(TARGET, MNT_FORCE))
 *
 * FSTYPE defaults to "nfs".  Example:
 *
 *   mount3 10.0.2.2:/export /mnt \
 *     vers=3,proto=tcp,nolock,port=2049,mountport=2049,mountproto=tcp,addr=10.0.2.2
 *
 * Exit status: 0 on success, 1 with a message on stderr naming errno.
 * Built with `gcc -static` by tests/guest/build-initramfs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: mount3 [-t FSTYPE] [-r] SOURCE TARGET [OPTIONS]\n"
            "       mount3 -u TARGET | -U TARGET\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *fstype = "nfs";
    unsigned long flags = 0;
    int unmount_flags = -1;
    int opt;

    while ((opt = getopt(argc, argv, "t:ruU")) != -1) {
        switch (opt) {
        case 't':
            fstype = optarg;
            break;
        case 'r':
            flags |= MS_RDONLY;
            break;
        case 'u':
            unmount_flags = 0;
            break;
        case 'U':
            unmount_flags = MNT_FORCE;
            break;
        default:
            usage();
        }
    }
    argc -= optind;
    argv += optind;

    if (unmount_flags >= 0) {
        if (argc != 1)
            usage();
        if (umount2(argv[0], unmount_flags) != 0) {
            fprintf(stderr, "mount3: umount %s: %s (errno %d)\n", argv[0],
                    strerror(errno), errno);
            return 1;
        }
        return 0;
    }

    if (argc < 2 || argc > 3)
        usage();
    const char *source = argv[0];
    const char *target = argv[1];
    const char *data = argc == 3 ? argv[2] : "";

    if (mount(source, target, fstype, flags, data) != 0) {
        int e = errno;
        fprintf(stderr, "mount3: mount -t %s %s %s -o %s: %s (errno %d)\n",
                fstype, source, target, data, strerror(e), e);
        return 1;
    }
    return 0;
}
