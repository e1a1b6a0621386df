/* A UDP echo server for test_ports.py (the busybox image has no UDP server): answers
 * each datagram with "<the sender's address>:<the datagram>" from the port given.
 * Built static by the test and bind-mounted into a container. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udpecho PORT\n");
        return 2;
    }
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (sock < 0 || bind(sock, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("udpecho: bind");
        return 1;
    }
    for (;;) {
        char data[1024], reply[1100];
        struct sockaddr_in peer;
        socklen_t size = sizeof peer;
        ssize_t got = recvfrom(sock, data, sizeof data - 1, 0, (struct sockaddr *)&peer, &size);
        if (got < 0)
            continue;
        data[got] = 0;
        int length = snprintf(reply, sizeof reply, "%s:%s", inet_ntoa(peer.sin_addr), data);
        sendto(sock, reply, length, 0, (struct sockaddr *)&peer, size);
    }
}
